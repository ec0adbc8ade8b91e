package endpoints

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/statedb/tables"
)

// coalesce is how long the controller waits, after a change, for more:
// a burst (pods starting together, a namespace relabelled) is derived,
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
	initialized := false
	apiDown := false
	for {
		txn := c.db.ReadTxn()
		ws := statedb.NewWatchSet()
		_, epWatch := c.src.endpoints.AllWatch(txn)
		_, podWatch := c.src.pods.AllWatch(txn)
		_, idWatch := c.src.identities.AllWatch(txn)
		api, _, apiWatch, _ := c.k8sStatus.GetWatch(txn, tables.K8sStatusNameIndex.Query(tables.K8sAPIServer))
		podsCache, _, cacheWatch, _ := c.k8sStatus.GetWatch(txn, tables.K8sStatusNameIndex.Query("pods"))
		ws.Add(epWatch, podWatch, idWatch, apiWatch, cacheWatch)

		complete := false
		if !initialized {
			var initWatches []<-chan struct{}
			complete, initWatches = c.complete(txn, podsCache)
			ws.Add(initWatches...)
		}
		n := c.write(c.src.desiredRows(txn), complete)
		initialized = initialized || complete

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
		if _, err := ws.Wait(ctx, coalesce); err != nil {
			return nil
		}
	}
}

// complete reports whether the desired rows derived from txn are all
// there will be: the endpoints restored, the pods and identities loaded,
// this node's Pod objects listed. Only then may pruning delete a CEP for
// having no row.
// It also returns the channels that close when a table's initialization
// completes.
func (c *controller) complete(txn statedb.ReadTxn, podsCache *tables.K8sStatus) (bool, []<-chan struct{}) {
	done := podsCache != nil && podsCache.OK
	var watches []<-chan struct{}
	for _, t := range []statedb.TableMeta{c.src.endpoints, c.src.pods, c.src.identities} {
		if ok, watch := t.Initialized(txn); !ok {
			done = false
			watches = append(watches, watch)
		}
	}
	return done, watches
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
