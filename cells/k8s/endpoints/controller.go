package endpoints

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"golang.org/x/time/rate"

	"github.com/membrane-net/membrane/statedb/tables"
)

// coalesce is the shortest time between two derivations: a burst of
// changes (pods starting together, a namespace relabelled) is derived,
// and written, once.
const coalesce = 50 * time.Millisecond

// controller writes the cilium-endpoints table: the desired CEPs, derived
// again from the sources whenever one of them changes.
type controller struct {
	db        *statedb.DB
	ceps      statedb.RWTable[*tables.CiliumEndpoint]
	k8sStatus statedb.Table[*tables.K8sStatus]
	src       sources
	initDone  func(statedb.WriteTxn)
	prune     func()
}

func (c *controller) run(ctx context.Context, health cell.Health) error {
	limit := rate.NewLimiter(rate.Every(coalesce), 1)
	initialized := false
	apiDown := false
	for {
		if err := limit.Wait(ctx); err != nil {
			return nil
		}
		txn := c.db.ReadTxn()
		_, epWatch := c.src.endpoints.AllWatch(txn)
		_, podWatch := c.src.pods.AllWatch(txn)
		_, idWatch := c.src.identities.AllWatch(txn)
		api, _, apiWatch, _ := c.k8sStatus.GetWatch(txn, tables.K8sStatusNameIndex.Query(tables.K8sAPIServer))
		podsCache, _, cacheWatch, _ := c.k8sStatus.GetWatch(txn, tables.K8sStatusNameIndex.Query("pods"))

		complete := !initialized && c.complete(txn, podsCache)
		n := c.write(c.src.desiredRows(txn), complete)
		if complete {
			initialized = true
		}

		// The API server is back: reconcile everything, as the writes
		// and deletes it missed may have been given up or overtaken.
		switch {
		case api != nil && !api.OK:
			apiDown = true
		case api != nil && apiDown:
			apiDown = false
			c.prune()
		}

		if initialized {
			health.OK(fmt.Sprintf("%d CiliumEndpoints desired", n))
		} else {
			health.OK("waiting for the endpoints to be restored and this node's pods to be listed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-epWatch:
		case <-podWatch:
		case <-idWatch:
		case <-apiWatch:
		case <-cacheWatch:
		}
	}
}

// complete reports whether the desired rows derived from txn are all
// there will be: the endpoints restored, the pods and identities loaded,
// this node's Pod objects listed. Only then may pruning delete a CEP for
// having no row.
func (c *controller) complete(txn statedb.ReadTxn, podsCache *tables.K8sStatus) bool {
	for _, ok := range []bool{
		initialized(txn, c.src.endpoints), initialized(txn, c.src.pods), initialized(txn, c.src.identities),
	} {
		if !ok {
			return false
		}
	}
	return podsCache != nil && podsCache.OK
}

func initialized[T any](txn statedb.ReadTxn, t statedb.Table[T]) bool {
	ok, _ := t.Initialized(txn)
	return ok
}

// write makes the table hold want: rows that changed (SameObject false)
// are written Pending for the reconciler, rows no longer wanted deleted.
// markInit also declares the table initialized, in the same transaction.
func (c *controller) write(want map[string]*tables.CiliumEndpoint, markInit bool) int {
	wtxn := c.db.WriteTxn(c.ceps)
	defer wtxn.Abort()
	changed := markInit
	for have := range c.ceps.All(wtxn) {
		if _, ok := want[have.Key()]; !ok {
			c.ceps.Delete(wtxn, have)
			changed = true
		}
	}
	for key, row := range want {
		if have, _, found := c.ceps.Get(wtxn, tables.CiliumEndpointKeyIndex.Query(key)); found && have.SameObject(row) {
			continue
		}
		row.Status = reconciler.StatusPending()
		c.ceps.Insert(wtxn, row)
		changed = true
	}
	if markInit {
		c.initDone(wtxn)
	}
	if changed {
		wtxn.Commit()
	}
	return len(want)
}
