package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/attachment"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ReclaimGrace is how long after the endpoints are restored the agent
// waits before it reclaims leaked allocations: an ADD that was running
// when the agent died (membrane-cni outlives it) finishes or fails within
// it, and the runtime's DELs of the failed ADDs arrive.
const ReclaimGrace = 10 * time.Second

// A crash (kill -9, power loss) during an ADD can leave the attachment's
// addresses allocated with nothing else: membrane-cni allocates first,
// then makes the veth, then the endpoint, and its rollback cannot release
// the addresses while the agent is down. Nothing reclaims them until the
// runtime sends DEL or GC, which it may never do for an ADD it saw fail.
//
// So once at start, after the grace, the allocations restored from
// ipam.json (only those: one made after the start may belong to an ADD in
// flight) are checked against the endpoints and the host veths, and the
// leaked ones released.

// leak is a restored allocation to release and why.
type leak struct {
	row *tables.IPAMAllocation
	why string
}

// findLeaks picks, among the allocations restored at start, those nothing
// uses. current is the ipam table now, endpoints the endpoints table,
// vethExists whether a host interface of that name exists. An allocation
// is kept if
//   - it changed since the start (released, or released and handed out
//     again): it is no longer the restored one;
//   - its owner is not a CNI attachment ("container-id:ifname"), e.g. one
//     made by hand through the API;
//   - an endpoint has its address;
//   - its attachment has no endpoint but its host veth exists: an ADD may
//     be between the veth and the endpoint; if it died there, the
//     runtime's DEL of the failed ADD, or its retry, cleans up.
//
// It is released if its attachment's endpoint has other addresses (an
// earlier ADD of the same attachment died and the retry got new ones), or
// if the attachment has neither an endpoint nor a host veth.
func findLeaks(restored []*tables.IPAMAllocation, current func(netip.Addr) (*tables.IPAMAllocation, bool),
	endpoints []*tables.Endpoint, vethExists func(string) bool) []leak {
	byIP := map[netip.Addr]*tables.Endpoint{}
	byOwner := map[string]*tables.Endpoint{}
	for _, ep := range endpoints {
		for _, ip := range []netip.Addr{ep.IPv4, ep.IPv6} {
			if ip.IsValid() {
				byIP[ip] = ep
			}
		}
		byOwner[ep.CNIAttachmentID()] = ep
	}
	var leaks []leak
	for _, r := range restored {
		now, ok := current(r.IP)
		if !ok || !sameAllocation(now, r) {
			continue
		}
		att, ok := attachment.ParseOwner(r.Owner)
		if !ok {
			continue
		}
		if _, used := byIP[r.IP]; used {
			continue
		}
		if ep, ok := byOwner[r.Owner]; ok {
			leaks = append(leaks, leak{r, fmt.Sprintf("the attachment's endpoint %d has other addresses (%s): left by an earlier ADD of the same attachment", ep.ID, endpointIPs(ep))})
			continue
		}
		if vethExists(att.HostVeth()) {
			continue
		}
		leaks = append(leaks, leak{r, fmt.Sprintf("no endpoint and no host veth %s: left by an ADD that did not finish (the agent stopped during it)", att.HostVeth())})
	}
	return leaks
}

func sameAllocation(a, b *tables.IPAMAllocation) bool {
	return a.IP == b.IP && a.Owner == b.Owner && a.Pod == b.Pod && a.Created.Equal(b.Created)
}

func endpointIPs(ep *tables.Endpoint) string {
	switch {
	case ep.IPv4.IsValid() && ep.IPv6.IsValid():
		return ep.IPv4.String() + " and " + ep.IPv6.String()
	case ep.IPv4.IsValid():
		return ep.IPv4.String()
	case ep.IPv6.IsValid():
		return ep.IPv6.String()
	}
	return "none"
}

// releaseLeak frees l's address if the table still holds exactly the
// restored allocation (a DEL may have released it since findLeaks, and a
// new ADD got it). false, nil: it changed, nothing done.
func (m *IPAM) releaseLeak(l leak) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return false, fmt.Errorf("%w: IPAM is stopping", ErrNotReady)
	}
	wtxn := m.db.WriteTxn(m.table)
	defer wtxn.Abort()
	a, _, found := m.table.Get(wtxn, tables.IPAMIPIndex.Query(l.row.IP))
	if !found || !sameAllocation(a, l.row) {
		return false, nil
	}
	if _, _, err := m.table.Delete(wtxn, a); err != nil {
		return false, fmt.Errorf("releasing %s: %w", a.IP, err)
	}
	if err := m.persist(wtxn, m.cursors()); err != nil {
		return false, fmt.Errorf("%s not released: %w", a.IP, err)
	}
	wtxn.Commit()
	m.log.Info("Released leaked pod address", "ip", a.IP, "owner", a.Owner, "pod", a.Pod, "why", l.why)
	return true, nil
}

// reclaimer runs findLeaks once, ReclaimGrace after the endpoints are
// restored, and releases what it finds.
type reclaimer struct {
	m         *IPAM
	endpoints statedb.Table[*tables.Endpoint]
	grace     time.Duration
	// health is a scope of the cell's own: a one-shot job's scope is
	// closed when it returns, and a failed release must stay visible.
	health cell.Health
}

func (r *reclaimer) run(ctx context.Context, _ cell.Health) error {
	health := r.health
	m := r.m
	m.mu.Lock()
	restored := m.restored
	m.mu.Unlock()
	if len(restored) == 0 {
		health.OK("nothing restored, nothing to reclaim")
		return nil
	}
	for {
		ok, watch := r.endpoints.Initialized(m.db.ReadTxn())
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		}
	}
	health.OK(fmt.Sprintf("checking %d restored allocations for leaks in %s", len(restored), r.grace))
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(r.grace):
	}
	txn := m.db.ReadTxn()
	current := func(ip netip.Addr) (*tables.IPAMAllocation, bool) {
		a, _, ok := m.table.Get(txn, tables.IPAMIPIndex.Query(ip))
		return a, ok
	}
	leaks := findLeaks(restored, current, statedb.Collect(r.endpoints.All(txn)), hostLinkExists)
	released := 0
	var errs []error
	for _, l := range leaks {
		ok, err := m.releaseLeak(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			released++
		}
	}
	m.log.Info("Checked restored allocations for leaks", "restored", len(restored), "released", released)
	if err := errors.Join(errs...); err != nil {
		health.Degraded("releasing leaked allocations failed; release them with DELETE /v1/ipam/{ip} (see the agent log)", err)
		return nil
	}
	health.OK(fmt.Sprintf("%d leaked allocations released (of %d restored)", released, len(restored)))
	return nil
}

// hostLinkExists: a lookup that fails for any other reason than "not
// found" counts as existing, so an address is never released on doubt.
func hostLinkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	return !errors.As(err, &nf)
}
