package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// retryInterval is how long the controller waits before retrying what
// failed for a reason no table change will fix (a state file that cannot
// be written). Exhaustion is retried as soon as an identity is released,
// invalid labels when the endpoint changes.
const retryInterval = 5 * time.Second

// allocTimeout bounds one allocation through the API server (Kubernetes
// mode): an endpoint whose labels are new while the API server is down
// fails within it, with the reason in its status log, and is retried.
const allocTimeout = 10 * time.Second

// initTimeout is how long the identities table waits for the cluster's
// identities (Kubernetes mode) before it is marked initialized anyway, so
// an agent started while the API server is down still serves.
const initTimeout = 30 * time.Second

// controller is the reactive part of the cell: it follows the endpoints
// table and keeps endpoints, identities table and allocator in step.
type controller struct {
	log        *slog.Logger
	db         *statedb.DB
	endpoints  statedb.RWTable[*tables.Endpoint]
	identities statedb.RWTable[*tables.Identity]
	filter     *labels.Filter
	store      Store
	idRange    clusterRange

	alloc            backend           // opened by start
	cluster          *ClusterAllocator // alloc in Kubernetes mode, else nil
	identitiesLoaded func(statedb.WriteTxn)

	// failed holds the endpoints whose identity could not be allocated,
	// with why; they are retried after a release or retryInterval.
	failed map[uint16]error
}

// start opens the allocator (persisted identities come back) and publishes
// every identity, reserved ones included, in the identities table.
//
// In Kubernetes mode the backend is the cluster's: its caches start here
// and the table is published by run once they have synced.
func (c *controller) start(cell.HookContext) error {
	if c.cluster != nil {
		c.alloc = c.cluster
		return nil
	}
	alloc, err := OpenAllocator(c.store, c.idRange.min, c.idRange.max)
	if err != nil {
		return fmt.Errorf("identity allocator: %w", err)
	}
	c.alloc = localBackend{alloc}
	idents := c.alloc.Identities()
	if err := c.publishAll(idents); err != nil {
		return fmt.Errorf("identity allocator: %w", err)
	}
	c.log.Info("Identities loaded", "reserved", len(tables.ReservedIdentities),
		"restored", len(idents)-len(tables.ReservedIdentities), "state", location(c.store))
	return nil
}

// publishAll inserts idents in the identities table and marks it
// initialized.
func (c *controller) publishAll(idents []*tables.Identity) error {
	wtxn := c.db.WriteTxn(c.identities)
	defer wtxn.Abort()
	for _, ident := range idents {
		if _, _, err := c.identities.Insert(wtxn, ident); err != nil {
			return fmt.Errorf("publish identity %d: %w", ident.ID, err)
		}
	}
	c.identitiesLoaded(wtxn)
	wtxn.Commit()
	return nil
}

// run is the controller's loop: resolve the identity of every changed
// endpoint, then release identities no endpoint uses any more.
func (c *controller) run(ctx context.Context, health cell.Health) error {
	wtxn := c.db.WriteTxn(c.endpoints)
	changes, err := c.endpoints.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return fmt.Errorf("watch the endpoints table: %w", err)
	}
	defer changes.Close()

	var (
		sweep    = true // an identity may have lost its last endpoint
		sweepErr error
		retry    <-chan time.Time
		retryDue bool

		// Kubernetes mode: the cluster's identities change under us, and
		// the table is published once the caches have synced.
		clusterChanged <-chan struct{}
		loaded         = c.cluster == nil
		loadPoll       *time.Ticker
		loadDeadline   = time.Now().Add(initTimeout)
	)
	if c.cluster != nil {
		clusterChanged = c.cluster.Changed()
		loadPoll = time.NewTicker(200 * time.Millisecond)
		defer loadPoll.Stop()
	}
	for {
		if !loaded && (c.cluster.Synced() || time.Now().After(loadDeadline)) {
			if err := c.publishAll(c.alloc.Identities()); err != nil {
				return fmt.Errorf("identity allocator: %w", err)
			}
			loaded, sweep = true, true
			loadPoll.Stop()
			loadPoll = nil
			c.log.Info("Cluster identities loaded", "synced", c.cluster.Synced(), "identities", len(c.alloc.Identities())-len(tables.ReservedIdentities), "from", c.cluster.Where())
		}
		seq, watch := changes.Next(c.db.ReadTxn())
		for change := range seq {
			sweep = true
			if change.Deleted {
				delete(c.failed, change.Object.ID)
				continue
			}
			c.resolve(ctx, change.Object)
		}

		// Until every endpoint is restored, an identity nobody uses yet
		// may still be claimed by an endpoint about to reappear.
		initialized, initWatch := c.endpoints.Initialized(c.db.ReadTxn())
		if initialized {
			initWatch = nil
			if loaded && (sweep || retryDue) {
				var released int
				released, sweepErr = c.releaseUnused()
				sweep = sweepErr != nil
				// A released number may be what a failed endpoint waits for.
				retryDue = retryDue || released > 0
			}
		}
		if retryDue {
			retryDue = false
			c.retryFailed(ctx)
		}

		switch {
		case sweepErr != nil:
			health.Degraded("releasing unused identities failed", sweepErr)
		case len(c.failed) > 0:
			health.Degraded(fmt.Sprintf("%d endpoint(s) wait for an identity", len(c.failed)), c.anyFailure())
		default:
			health.OK(fmt.Sprintf("%d identities", c.identities.NumObjects(c.db.ReadTxn())))
		}
		if retry == nil && (sweepErr != nil || c.failedToSave()) {
			retry = time.After(retryInterval)
		}

		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-initWatch:
		case <-retry:
			retry, retryDue = nil, true
		case <-clusterChanged:
			sweep = true
			c.resolveVanished(ctx)
		case <-tickC(loadPoll):
		}
	}
}

// failedToSave reports whether an endpoint waits because the state file
// could not be written. Other failures (exhaustion, invalid labels) wait
// for a release or for the endpoint to change.
func (c *controller) failedToSave() bool {
	for _, err := range c.failed {
		if errors.Is(err, errNotSaved) || errors.Is(err, errUnavailable) {
			return true
		}
	}
	return false
}

func (c *controller) anyFailure() error {
	for _, err := range c.failed {
		return err
	}
	return nil
}

// wantsIdentity reports whether an endpoint in state s should have an
// identity resolved: not once it is being deleted or was found invalid.
func wantsIdentity(s tables.EndpointState) bool {
	switch s {
	case tables.StateDisconnecting, tables.StateDisconnected, tables.StateInvalid:
		return false
	}
	return true
}

// tickC is t's channel, nil (never ready) for no ticker or a stopped one.
func tickC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// vanished reports whether identity id, carried by a local endpoint, is
// gone from the cluster (deleted by the garbage collector while this
// agent adopted it, or by hand): the endpoint then claims it back.
func (c *controller) vanished(id tables.NumericIdentity) bool {
	if c.cluster == nil || !c.cluster.Synced() || id < c.idRange.min || id > c.idRange.max {
		return false
	}
	_, ok := c.alloc.Get(id)
	return !ok
}

// resolveVanished resolves again the endpoints whose identity vanished.
func (c *controller) resolveVanished(ctx context.Context) {
	for ep := range c.endpoints.All(c.db.ReadTxn()) {
		if ep.Identity != tables.IdentityUnknown && c.vanished(ep.Identity) {
			c.log.Warn("Identity of a local endpoint vanished from the cluster; claiming it again", "endpoint", ep.ID, "identity", ep.Identity)
			c.resolve(ctx, ep)
		}
	}
}

// resolve gives ep the identity of its security labels.
func (c *controller) resolve(ctx context.Context, ep *tables.Endpoint) {
	if !ep.LabelsResolved || !wantsIdentity(ep.State) {
		delete(c.failed, ep.ID)
		return
	}
	sec := c.filter.Filter(ep.Labels())
	var (
		ident *tables.Identity
		isNew bool
		err   error
	)
	actx, cancel := context.WithTimeout(ctx, allocTimeout)
	defer cancel()
	if ep.Identity != tables.IdentityUnknown && (ep.State == tables.StateRestoring || c.vanished(ep.Identity)) {
		// Honour the identity the endpoint had before the restart.
		ident, isNew, err = c.alloc.Restore(actx, sec, ep.Identity)
	} else {
		ident, isNew, err = c.alloc.Allocate(actx, sec)
	}
	if err != nil {
		c.failed[ep.ID] = err
		c.log.Warn("Cannot resolve endpoint identity", "endpoint", ep.ID, "labels", sec.String(), "error", err)
		c.noteFailure(ep.ID, err)
		return
	}
	delete(c.failed, ep.ID)
	if isNew {
		c.log.Info("Identity allocated", "identity", ident.ID, "labels", sec.String(), "endpoint", ep.ID)
	}

	// Most changes (our own writes coming back, regeneration progress)
	// need nothing: find out without locking the tables.
	if upd, _ := assign(ep, ident, sec); upd == nil && c.published(c.db.ReadTxn(), ident) {
		return
	}

	wtxn := c.db.WriteTxn(c.identities, c.endpoints)
	defer wtxn.Abort()
	if !c.published(wtxn, ident) {
		if _, _, err := c.identities.Insert(wtxn, ident); err != nil {
			c.log.Error("Cannot publish identity", "identity", ident.ID, "error", err)
			return
		}
	}
	// Other cells write this table too: apply the identity only if the
	// endpoint still has the labels it was resolved from. If they changed,
	// the newer row is on its way through the change iterator.
	cur, _, found := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(ep.ID))
	if found && cur.LabelsResolved && wantsIdentity(cur.State) && cur.Labels().Equal(ep.Labels()) {
		upd, err := assign(cur, ident, sec)
		if err != nil {
			c.log.Error("Cannot set endpoint identity", "endpoint", ep.ID, "identity", ident.ID, "error", err)
		} else if upd != nil {
			if _, _, err := c.endpoints.Insert(wtxn, upd); err != nil {
				c.log.Error("Cannot update endpoint", "endpoint", ep.ID, "error", err)
				return
			}
			c.log.Debug("Endpoint identity set", "endpoint", ep.ID, "identity", ident.ID, "previous", cur.Identity)
		}
	}
	wtxn.Commit()
}

// assign returns the endpoint with identity ident and state
// waiting-to-regenerate, or nil if it has that identity and is past
// waiting for it.
func assign(ep *tables.Endpoint, ident *tables.Identity, sec labels.Labels) (*tables.Endpoint, error) {
	waiting := ep.State == tables.StateWaitingForIdentity || ep.State == tables.StateRestoring
	if ep.Identity == ident.ID && !waiting {
		return nil, nil
	}
	desc := "no security labels"
	if len(sec) > 0 {
		desc = "labels " + strings.Join(sec.Strings(), ",")
	}
	why := fmt.Sprintf("identity %d resolved (%s)", ident.ID, desc)
	if ep.Identity != tables.IdentityUnknown && ep.Identity != ident.ID {
		why = fmt.Sprintf("identity %d resolved, was %d (%s)", ident.ID, ep.Identity, desc)
	}
	upd := ep.Clone()
	upd.Identity = ident.ID
	if upd.State == tables.StateWaitingToRegenerate {
		upd.AddLog("ok", why)
		return upd, nil
	}
	if err := upd.SetState(tables.StateWaitingToRegenerate, why); err != nil {
		return nil, err
	}
	return upd, nil
}

// published reports whether the identities table holds ident as it is.
func (c *controller) published(txn statedb.ReadTxn, ident *tables.Identity) bool {
	row, _, ok := c.identities.Get(txn, tables.IdentityIDIndex.Query(ident.ID))
	return ok && row.Reserved == ident.Reserved && row.Source == ident.Source && row.Labels.Equal(ident.Labels)
}

// noteFailure records in the endpoint's status log why it has no identity
// (once per distinct reason, so the write does not feed itself).
func (c *controller) noteFailure(id uint16, cause error) {
	msg := "identity not resolved: " + cause.Error()
	wtxn := c.db.WriteTxn(c.endpoints)
	defer wtxn.Abort()
	cur, _, found := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !found {
		return
	}
	if n := len(cur.Log); n > 0 && cur.Log[n-1].Code == "failure" && cur.Log[n-1].Message == msg {
		return
	}
	upd := cur.Clone()
	upd.AddLog("failure", msg)
	if _, _, err := c.endpoints.Insert(wtxn, upd); err != nil {
		c.log.Error("Cannot update endpoint log", "endpoint", id, "error", err)
		return
	}
	wtxn.Commit()
}

// retryFailed resolves again the endpoints that failed before.
func (c *controller) retryFailed(ctx context.Context) {
	txn := c.db.ReadTxn()
	for id := range c.failed {
		ep, _, found := c.endpoints.Get(txn, tables.EndpointIDIndex.Query(id))
		if !found {
			delete(c.failed, id)
			continue
		}
		c.resolve(ctx, ep)
	}
}

// releaseUnused releases every cluster identity that no endpoint uses: an
// identity's reference count is the number of endpoints rows that carry
// it, so it cannot drift from the truth. Then it makes the table what the
// backend knows: it removes rows the backend no longer knows (left over by
// an earlier failure; in Kubernetes mode, identities deleted in the
// cluster) and, in Kubernetes mode, adds the identities other agents
// created. It never touches the local (CIDR) identities, which the policy
// engine owns.
func (c *controller) releaseUnused() (int, error) {
	txn := c.db.ReadTxn()
	var unused []tables.NumericIdentity
	for _, ident := range c.alloc.Identities() {
		if ident.Reserved {
			continue
		}
		if _, _, used := c.endpoints.Get(txn, tables.EndpointIdentityIndex.Query(ident.ID)); !used {
			unused = append(unused, ident.ID)
		}
	}
	released, err := c.alloc.Release(unused...)
	if err != nil {
		return 0, err
	}
	var stale []*tables.Identity
	for row := range c.identities.All(txn) {
		if row.ID&tables.LocalIdentityFlag != 0 {
			continue // CIDR identities belong to the policy engine
		}
		if _, known := c.alloc.Get(row.ID); !known {
			stale = append(stale, row)
		}
	}
	var missing []*tables.Identity
	if c.cluster != nil {
		for _, ident := range c.alloc.Identities() {
			if !c.published(txn, ident) {
				missing = append(missing, ident)
			}
		}
	}
	if len(stale) == 0 && len(missing) == 0 {
		return len(released), nil
	}
	wtxn := c.db.WriteTxn(c.identities)
	defer wtxn.Abort()
	for _, row := range stale {
		if _, _, err := c.identities.Delete(wtxn, row); err != nil {
			return len(released), fmt.Errorf("unpublish identity %d: %w", row.ID, err)
		}
	}
	for _, ident := range missing {
		if _, _, err := c.identities.Insert(wtxn, ident); err != nil {
			return len(released), fmt.Errorf("publish identity %d: %w", ident.ID, err)
		}
	}
	wtxn.Commit()
	for _, row := range stale {
		c.log.Info("Identity released", "identity", row.ID, "labels", row.Labels.String())
	}
	return len(released), nil
}
