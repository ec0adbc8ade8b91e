package regeneration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/metrics"
	"github.com/membrane-net/membrane/statedb/tables"
)

type controller struct {
	log        *slog.Logger
	db         *statedb.DB
	endpoints  statedb.RWTable[*tables.Endpoint]
	ipcache    statedb.RWTable[*tables.IPCacheEntry]
	epmap      statedb.RWTable[*tables.EndpointMapEntry]
	policy     statedb.Table[*tables.EndpointPolicy]
	withPolicy bool

	ipcacheInit, epmapInit func(statedb.WriteTxn)
	initialized            bool
	// reported remembers the last datapath error logged per endpoint, so
	// a retrying reconciler does not flood the endpoint's log.
	reported map[uint16]string
}

func (c *controller) run(ctx context.Context, health cell.Health) error {
	c.reported = map[uint16]string{}
	wtxn := c.db.WriteTxn(c.endpoints, c.policy)
	changes, err := c.endpoints.Changes(wtxn)
	if err != nil {
		wtxn.Abort()
		return err
	}
	policyChanges, err := c.policy.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return err
	}
	defer changes.Close()
	defer policyChanges.Close()

	for {
		txn := c.db.ReadTxn()
		seq, epWatch := changes.Next(txn)
		var deleted []*tables.Endpoint
		for ch := range seq {
			if ch.Deleted {
				deleted = append(deleted, ch.Object)
			}
		}
		if len(deleted) > 0 {
			c.removeRows(deleted)
		}
		pseq, polWatch := policyChanges.Next(txn)
		var policyChanged []uint16
		for ch := range pseq {
			if !ch.Deleted {
				policyChanged = append(policyChanged, ch.Object.EndpointID)
			}
		}

		initWatch := c.maybeInitialize(txn)

		var errs []error
		for _, id := range policyChanged {
			errs = append(errs, c.policyChanged(id))
		}
		for ep := range c.endpoints.List(c.db.ReadTxn(), tables.EndpointStateIndex.Query(tables.StateWaitingToRegenerate)) {
			errs = append(errs, c.regenerate(ep.ID))
		}
		// Status write-backs of the reconcilers wake us through these.
		rtxn := c.db.ReadTxn()
		_, ipcWatch := c.ipcache.AllWatch(rtxn)
		_, epmWatch := c.epmap.AllWatch(rtxn)
		_, polAllWatch := c.policy.AllWatch(rtxn)
		for ep := range c.endpoints.List(rtxn, tables.EndpointStateIndex.Query(tables.StateRegenerating)) {
			errs = append(errs, c.checkDone(rtxn, ep))
		}
		if err := errors.Join(errs...); err != nil {
			health.Degraded("some endpoints failed to regenerate (retrying)", err)
		} else {
			health.OK("endpoints regenerated")
		}

		select {
		case <-ctx.Done():
			return nil
		case <-epWatch:
		case <-polWatch:
		case <-ipcWatch:
		case <-epmWatch:
		case <-polAllWatch:
		case <-initWatch:
		}
	}
}

// maybeInitialize marks the datapath tables initialized once the endpoints
// table is (restore done) and every restored endpoint has its rows. It
// returns a channel that closes when it is worth looking again.
func (c *controller) maybeInitialize(txn statedb.ReadTxn) <-chan struct{} {
	if c.initialized {
		return nil
	}
	ok, watch := c.endpoints.Initialized(txn)
	if !ok {
		return watch
	}
	// Restored endpoints keep the identity they had: write their rows now,
	// before they go through labels and identity again, so pruning never
	// removes an entry a running pod needs. Their policy row comes from the
	// policy engine, which waits for the rules to be restored.
	wtxn := c.db.WriteTxn(c.ipcache, c.epmap)
	defer wtxn.Abort()
	for ep := range c.endpoints.List(wtxn, tables.EndpointStateIndex.Query(tables.StateRestoring)) {
		if ep.Identity != 0 {
			c.writeRows(wtxn, ep, c.restoredEnforcement(wtxn, ep))
		}
	}
	c.ipcacheInit(wtxn)
	c.epmapInit(wtxn)
	wtxn.Commit()
	c.initialized = true
	return nil
}

// restoredEnforcement keeps the enforcement a restored endpoint had when
// it was last ready (persisted with the endpoint), until its policy is
// recomputed: rewriting its endpoint map entry must not switch policy off.
func (c *controller) restoredEnforcement(_ statedb.ReadTxn, ep *tables.Endpoint) *tables.EndpointPolicy {
	return &tables.EndpointPolicy{IngressEnforced: ep.IngressEnforced, EgressEnforced: ep.EgressEnforced}
}

// policyFor returns the endpoint's computed policy for its current
// identity; ok is false while the engine has not computed it. Without a
// policy engine there is nothing to wait for.
func (c *controller) policyFor(txn statedb.ReadTxn, ep *tables.Endpoint) (pol *tables.EndpointPolicy, ok bool) {
	if !c.withPolicy {
		return nil, true
	}
	pol, _, found := c.policy.Get(txn, tables.EndpointPolicyIndex.Query(ep.ID))
	if !found || pol.Identity != ep.Identity {
		return nil, false
	}
	return pol, true
}

// desired returns the datapath rows an endpoint asks for.
func desired(ep *tables.Endpoint, pol *tables.EndpointPolicy) ([]*tables.IPCacheEntry, *tables.EndpointMapEntry) {
	var ipc []*tables.IPCacheEntry
	for _, a := range ep.IPs() {
		ipc = append(ipc, &tables.IPCacheEntry{
			Prefix: netip.PrefixFrom(a, a.BitLen()), Identity: ep.Identity,
			Source: "endpoint", EndpointID: ep.ID, IfIndex: uint32(max(ep.HostIfIndex, 0)),
			Status: reconciler.StatusPending(),
		})
	}
	var epm *tables.EndpointMapEntry
	if ep.HostIfIndex > 0 {
		epm = &tables.EndpointMapEntry{
			IfIndex: uint32(ep.HostIfIndex), EndpointID: ep.ID, Identity: ep.Identity,
			IPv4: ep.IPv4, IPv6: ep.IPv6, MAC: ep.MAC, HostMAC: ep.HostMAC,
			Status: reconciler.StatusPending(),
		}
		if pol != nil {
			epm.IngressEnforced, epm.EgressEnforced = pol.IngressEnforced, pol.EgressEnforced
		}
	}
	return ipc, epm
}

// writeRows makes the datapath rows of ep what it asks for. Rows that
// already say the same are left alone, so the kernel is not rewritten.
func (c *controller) writeRows(wtxn statedb.WriteTxn, ep *tables.Endpoint, pol *tables.EndpointPolicy) {
	ipc, epm := desired(ep, pol)
	want := map[netip.Prefix]bool{}
	for _, e := range ipc {
		want[e.Prefix] = true
		old, _, ok := c.ipcache.Get(wtxn, tables.IPCachePrefixIndex.Query(e.Prefix))
		if ok && old.Identity == e.Identity && old.EndpointID == e.EndpointID && old.IfIndex == e.IfIndex && old.Source == e.Source {
			continue
		}
		c.ipcache.Insert(wtxn, e)
	}
	for old := range c.ipcache.List(wtxn, tables.IPCacheEndpointIndex.Query(ep.ID)) {
		if !want[old.Prefix] {
			c.ipcache.Delete(wtxn, old)
		}
	}
	for old := range c.epmap.List(wtxn, tables.EndpointMapEndpointIndex.Query(ep.ID)) {
		if epm == nil || old.IfIndex != epm.IfIndex {
			c.epmap.Delete(wtxn, old)
		}
	}
	if epm != nil {
		old, _, ok := c.epmap.Get(wtxn, tables.EndpointMapIfIndexIndex.Query(epm.IfIndex))
		if !ok || !old.SameDesired(epm) {
			c.epmap.Insert(wtxn, epm)
		}
	}
}

// regenerate moves an endpoint to regenerating and, once its policy for
// its current identity is computed, writes its rows. Until then the rows
// of its previous identity stay: a pod never runs with half its policy.
func (c *controller) regenerate(id uint16) error {
	wtxn := c.db.WriteTxn(c.endpoints, c.ipcache, c.epmap)
	defer wtxn.Abort()
	ep, _, ok := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.State != tables.StateWaitingToRegenerate {
		return nil
	}
	if pol, ok := c.policyFor(wtxn, ep); ok && !c.mustWaitForPeers(wtxn, ep) {
		c.writeRows(wtxn, ep, pol)
	}
	ep = ep.Clone()
	if err := ep.SetState(tables.StateRegenerating, fmt.Sprintf("regenerating datapath (identity %d)", ep.Identity)); err != nil {
		return err
	}
	c.endpoints.Insert(wtxn, ep)
	wtxn.Commit()
	return nil
}

// policyChanged sends a ready endpoint whose computed policy changed back
// through regeneration, so its state and policy revision say what the
// kernel enforces. The row may already be reconciled when we look (the
// change and its status write-back can arrive together), so compare with
// what the endpoint reports rather than with the row's status.
func (c *controller) policyChanged(id uint16) error {
	txn := c.db.ReadTxn()
	ep, _, ok := c.endpoints.Get(txn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.State != tables.StateReady {
		return nil
	}
	pol, ok := c.policyFor(txn, ep)
	if !ok {
		return nil // computed for another identity: the identity change drives it
	}
	ipc, epm := desired(ep, pol)
	if pol.Revision == ep.PolicyRevision && pol.Status.Kind == reconciler.StatusKindDone && !c.rowsStale(txn, ipc, epm) {
		return nil // already enforced and reported
	}
	return c.updateEndpoint(id, tables.StateReady, func(ep *tables.Endpoint) error {
		return ep.SetState(tables.StateWaitingToRegenerate, fmt.Sprintf("policy changed (revision %d)", pol.Revision))
	})
}

// checkDone moves a regenerating endpoint to ready once the reconcilers
// have written every row it asks for. Errors are logged once per distinct
// message; the reconcilers keep retrying with backoff.
func (c *controller) checkDone(txn statedb.ReadTxn, ep *tables.Endpoint) error {
	pol, ok := c.policyFor(txn, ep)
	if !ok {
		return nil // waiting for the policy engine
	}
	// Rows may have been written before the policy was computed: bring
	// them up to date first (no-op when they are).
	ipc, epm := desired(ep, pol)
	if c.rowsStale(txn, ipc, epm) {
		if c.mustWaitForPeers(txn, ep) {
			return nil // woken by the peers' policy rows' status
		}
		return c.rewrite(ep.ID, pol)
	}
	if c.peersPending(txn, ep) {
		return nil
	}
	var failure error
	done := true
	check := func(st reconciler.Status, what string) {
		switch st.Kind {
		case reconciler.StatusKindDone:
		case reconciler.StatusKindError:
			done = false
			msg := "unknown error"
			if st.Error != nil {
				msg = *st.Error
			}
			failure = fmt.Errorf("%s: %s", what, msg)
		default:
			done = false
		}
	}
	for _, want := range ipc {
		row, _, _ := c.ipcache.Get(txn, tables.IPCachePrefixIndex.Query(want.Prefix))
		check(row.Status, "ipcache "+want.Prefix.String())
	}
	if epm != nil {
		row, _, _ := c.epmap.Get(txn, tables.EndpointMapIfIndexIndex.Query(epm.IfIndex))
		check(row.Status, fmt.Sprintf("endpoint map ifindex %d", epm.IfIndex))
	}
	if pol != nil {
		check(pol.Status, "policy map")
	}
	if failure != nil {
		if c.reported[ep.ID] != failure.Error() {
			c.reported[ep.ID] = failure.Error()
			c.updateEndpoint(ep.ID, tables.StateRegenerating, func(e *tables.Endpoint) error {
				e.AddLog("failure", "datapath update failed, retrying: "+failure.Error())
				return nil
			})
		}
		return fmt.Errorf("endpoint %d: %w", ep.ID, failure)
	}
	if !done {
		return nil
	}
	delete(c.reported, ep.ID)
	return c.updateEndpoint(ep.ID, tables.StateRegenerating, func(e *tables.Endpoint) error {
		e.DatapathIdentity = e.Identity
		msg := fmt.Sprintf("datapath ready (identity %d)", e.Identity)
		if pol != nil {
			e.PolicyRevision = pol.Revision
			e.IngressEnforced, e.EgressEnforced = pol.IngressEnforced, pol.EgressEnforced
			msg += fmt.Sprintf(", policy revision %d", pol.Revision)
		}
		since, ok := regeneratingSince(e)
		if err := e.SetState(tables.StateReady, msg); err != nil {
			return err
		}
		if ok {
			metrics.EndpointRegenerationDuration.Observe(time.Since(since).Seconds())
		}
		return nil
	})
}

// regeneratingSince is when the endpoint entered its current
// regenerating spell: the first of the status log's last run of
// regenerating entries (a failure logged meanwhile is one of them).
func regeneratingSince(e *tables.Endpoint) (time.Time, bool) {
	i := len(e.Log)
	for i > 0 && e.Log[i-1].State == tables.StateRegenerating {
		i--
	}
	if i == len(e.Log) {
		return time.Time{}, false
	}
	return e.Log[i].Timestamp, true
}

// peersPending reports whether an endpoint-policy row older than the
// endpoint's own is still waiting for the datapath. The policy engine
// writes the rows of the peers whose selectors match a new identity in the
// same transaction as the row of the endpoint that carries it, or in an
// earlier one, and the reconciler takes rows in revision order; so once
// none older than the endpoint's row is pending, every peer's policy map
// knows its identity, and a packet from its first one is judged right.
// A row in error does not hold anyone back: its endpoint reports it.
func (c *controller) peersPending(txn statedb.ReadTxn, ep *tables.Endpoint) bool {
	if !c.withPolicy {
		return false
	}
	_, own, ok := c.policy.Get(txn, tables.EndpointPolicyIndex.Query(ep.ID))
	if !ok {
		return false
	}
	for row, rev := range c.policy.List(txn, tables.EndpointPolicyPendingIndex.Query(true)) {
		if rev < own && row.EndpointID != ep.ID {
			return true
		}
	}
	return false
}

// mustWaitForPeers reports whether the endpoint's addresses would switch
// to a new identity (a relabel) before the peers' policies know it: until
// they do, the addresses keep the identity peers already judge them by.
// A new endpoint's rows are written at once; its readiness waits instead.
func (c *controller) mustWaitForPeers(txn statedb.ReadTxn, ep *tables.Endpoint) bool {
	switching := false
	for _, a := range ep.IPs() {
		row, _, ok := c.ipcache.Get(txn, tables.IPCachePrefixIndex.Query(netip.PrefixFrom(a, a.BitLen())))
		if ok && row.EndpointID == ep.ID && row.Identity != ep.Identity {
			switching = true
		}
	}
	return switching && c.peersPending(txn, ep)
}

// rowsStale reports whether any datapath row differs from what is desired.
func (c *controller) rowsStale(txn statedb.ReadTxn, ipc []*tables.IPCacheEntry, epm *tables.EndpointMapEntry) bool {
	for _, want := range ipc {
		row, _, ok := c.ipcache.Get(txn, tables.IPCachePrefixIndex.Query(want.Prefix))
		if !ok || row.Identity != want.Identity || row.EndpointID != want.EndpointID {
			return true
		}
	}
	if epm != nil {
		row, _, ok := c.epmap.Get(txn, tables.EndpointMapIfIndexIndex.Query(epm.IfIndex))
		if !ok || !row.SameDesired(epm) {
			return true
		}
	}
	return false
}

func (c *controller) rewrite(id uint16, pol *tables.EndpointPolicy) error {
	wtxn := c.db.WriteTxn(c.ipcache, c.epmap)
	defer wtxn.Abort()
	ep, _, ok := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.State != tables.StateRegenerating {
		return nil
	}
	c.writeRows(wtxn, ep, pol)
	wtxn.Commit()
	return nil
}

// updateEndpoint applies fn to endpoint id if it is still in state.
func (c *controller) updateEndpoint(id uint16, state tables.EndpointState, fn func(*tables.Endpoint) error) error {
	wtxn := c.db.WriteTxn(c.endpoints)
	defer wtxn.Abort()
	ep, _, ok := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.State != state {
		return nil
	}
	ep = ep.Clone()
	if err := fn(ep); err != nil {
		return err
	}
	c.endpoints.Insert(wtxn, ep)
	wtxn.Commit()
	return nil
}

// removeRows deletes the datapath rows of deleted endpoints (unless a new
// endpoint already took them over).
func (c *controller) removeRows(eps []*tables.Endpoint) {
	wtxn := c.db.WriteTxn(c.ipcache, c.epmap)
	defer wtxn.Abort()
	for _, ep := range eps {
		delete(c.reported, ep.ID)
		if _, _, live := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(ep.ID)); live {
			continue // the ID was reused at once; its rows are the new endpoint's
		}
		for row := range c.ipcache.List(wtxn, tables.IPCacheEndpointIndex.Query(ep.ID)) {
			c.ipcache.Delete(wtxn, row)
		}
		for row := range c.epmap.List(wtxn, tables.EndpointMapEndpointIndex.Query(ep.ID)) {
			c.epmap.Delete(wtxn, row)
		}
	}
	wtxn.Commit()
}
