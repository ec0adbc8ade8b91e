package regeneration

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/api/models"
	tables "github.com/membrane-net/membrane/statedb"
)

type controller struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.RWTable[*tables.Endpoint]
	ipcache   statedb.RWTable[*tables.IPCacheEntry]
	epmap     statedb.RWTable[*tables.EndpointMapEntry]

	ipcacheInit, epmapInit func(statedb.WriteTxn)
	initialized            bool
	// reported remembers the last datapath error logged per endpoint, so
	// a retrying reconciler does not flood the endpoint's log.
	reported map[uint16]string
}

func (c *controller) run(ctx context.Context, health cell.Health) error {
	c.reported = map[uint16]string{}
	wtxn := c.db.WriteTxn(c.endpoints)
	changes, err := c.endpoints.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return err
	}
	defer changes.Close()

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

		initWatch := c.maybeInitialize(txn)

		for ep := range c.endpoints.List(txn, tables.EndpointStateIndex.Query(models.StateWaitingToRegenerate)) {
			if err := c.regenerate(ep.ID); err != nil {
				health.Degraded("regeneration", err)
			}
		}
		// Status write-backs of the reconcilers wake us through these.
		_, ipcWatch := c.ipcache.AllWatch(c.db.ReadTxn())
		_, epmWatch := c.epmap.AllWatch(c.db.ReadTxn())
		for ep := range c.endpoints.List(c.db.ReadTxn(), tables.EndpointStateIndex.Query(models.StateRegenerating)) {
			if err := c.checkDone(ep); err != nil {
				health.Degraded("regeneration", err)
			}
		}
		health.OK("endpoints regenerated")

		select {
		case <-ctx.Done():
			return nil
		case <-epWatch:
		case <-ipcWatch:
		case <-epmWatch:
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
	// removes an entry a running pod needs.
	wtxn := c.db.WriteTxn(c.ipcache, c.epmap)
	defer wtxn.Abort()
	for ep := range c.endpoints.List(wtxn, tables.EndpointStateIndex.Query(models.StateRestoring)) {
		if ep.Identity != 0 {
			c.writeRows(wtxn, ep)
		}
	}
	c.ipcacheInit(wtxn)
	c.epmapInit(wtxn)
	wtxn.Commit()
	c.initialized = true
	return nil
}

// desired returns the datapath rows an endpoint asks for.
func desired(ep *tables.Endpoint) ([]*tables.IPCacheEntry, *tables.EndpointMapEntry) {
	var ipc []*tables.IPCacheEntry
	for _, a := range ep.IPs() {
		ipc = append(ipc, &tables.IPCacheEntry{
			Prefix: netip.PrefixFrom(a, a.BitLen()), Identity: ep.Identity,
			Source: "endpoint", EndpointID: ep.ID, Status: reconciler.StatusPending(),
		})
	}
	var epm *tables.EndpointMapEntry
	if ep.HostIfIndex > 0 {
		epm = &tables.EndpointMapEntry{
			IfIndex: uint32(ep.HostIfIndex), EndpointID: ep.ID, Identity: ep.Identity,
			IPv4: ep.IPv4, IPv6: ep.IPv6, MAC: ep.MAC, HostMAC: ep.HostMAC,
			Status: reconciler.StatusPending(),
		}
	}
	return ipc, epm
}

// writeRows makes the datapath rows of ep what it asks for. Rows that
// already say the same are left alone, so the kernel is not rewritten.
func (c *controller) writeRows(wtxn statedb.WriteTxn, ep *tables.Endpoint) {
	ipc, epm := desired(ep)
	want := map[netip.Prefix]bool{}
	for _, e := range ipc {
		want[e.Prefix] = true
		old, _, ok := c.ipcache.Get(wtxn, tables.IPCachePrefixIndex.Query(e.Prefix))
		if ok && old.Identity == e.Identity && old.EndpointID == e.EndpointID && old.Source == e.Source {
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

// regenerate writes an endpoint's rows and moves it to regenerating.
func (c *controller) regenerate(id uint16) error {
	wtxn := c.db.WriteTxn(c.endpoints, c.ipcache, c.epmap)
	defer wtxn.Abort()
	ep, _, ok := c.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.State != models.StateWaitingToRegenerate {
		return nil
	}
	c.writeRows(wtxn, ep)
	ep = ep.Clone()
	if err := ep.SetState(models.StateRegenerating, fmt.Sprintf("regenerating datapath (identity %d)", ep.Identity)); err != nil {
		return err
	}
	c.endpoints.Insert(wtxn, ep)
	wtxn.Commit()
	return nil
}

// checkDone moves a regenerating endpoint to ready once the reconcilers
// have written every row it asked for. Errors are logged once per
// distinct message; the reconcilers keep retrying.
func (c *controller) checkDone(ep *tables.Endpoint) error {
	txn := c.db.ReadTxn()
	ipc, epm := desired(ep)
	var failure error
	done := true
	check := func(ok bool, st reconciler.Status, what string) {
		switch {
		case !ok:
			done = false
		case st.Kind == reconciler.StatusKindError:
			done = false
			msg := "unknown error"
			if st.Error != nil {
				msg = *st.Error
			}
			failure = fmt.Errorf("%s: %s", what, msg)
		case st.Kind != reconciler.StatusKindDone:
			done = false
		}
	}
	for _, want := range ipc {
		row, _, ok := c.ipcache.Get(txn, tables.IPCachePrefixIndex.Query(want.Prefix))
		ok = ok && row.Identity == want.Identity && row.EndpointID == ep.ID
		var st reconciler.Status
		if ok {
			st = row.Status
		}
		check(ok, st, "ipcache "+want.Prefix.String())
	}
	if epm != nil {
		row, _, ok := c.epmap.Get(txn, tables.EndpointMapIfIndexIndex.Query(epm.IfIndex))
		ok = ok && row.SameDesired(epm)
		var st reconciler.Status
		if ok {
			st = row.Status
		}
		check(ok, st, fmt.Sprintf("endpoint map ifindex %d", epm.IfIndex))
	}
	if failure != nil {
		if c.reported[ep.ID] != failure.Error() {
			c.reported[ep.ID] = failure.Error()
			c.updateEndpoint(ep.ID, models.StateRegenerating, func(e *tables.Endpoint) error {
				e.AddLog("failure", "datapath update failed, retrying: "+failure.Error())
				return nil
			})
		}
		return failure
	}
	if !done {
		return nil
	}
	delete(c.reported, ep.ID)
	return c.updateEndpoint(ep.ID, models.StateRegenerating, func(e *tables.Endpoint) error {
		return e.SetState(models.StateReady, fmt.Sprintf("datapath ready (identity %d)", e.Identity))
	})
}

// updateEndpoint applies fn to endpoint id if it is still in state.
func (c *controller) updateEndpoint(id uint16, state models.EndpointState, fn func(*tables.Endpoint) error) error {
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
