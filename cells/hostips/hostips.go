// Package hostips gives the node's own addresses the host identity: it
// keeps one ipcache row per address configured in the host network
// namespace (the router address on every endpoint veth included), so the
// datapath sees traffic from the node itself as identity 1 (reserved:host)
// and policy can allow or deny it with the entity "host".
//
// Reads: the kernel's addresses (netlink). Writes: ipcache (source "host").
// Try it: membrane statedb ipcache.
package hostips

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Source marks the rows this cell owns.
const Source = "host"

// Cell keeps the host's addresses in the ipcache.
var Cell = cell.Module(
	"host-ips",
	"Host addresses in the ipcache as the host identity",
	cell.Invoke(register),
)

// resync bounds how stale the rows can get if an address event is missed
// (netlink subscriptions can overflow).
const resync = 30 * time.Second

func register(jobs job.Group, log *slog.Logger, db *statedb.DB, ipcache statedb.RWTable[*tables.IPCacheEntry]) {
	wtxn := db.WriteTxn(ipcache)
	initDone := ipcache.RegisterInitializer(wtxn, "host-ips")
	wtxn.Commit()
	s := &syncer{log: log, db: db, ipcache: ipcache, initDone: initDone}
	jobs.Add(job.OneShot("sync-host-ips", s.run))
}

type syncer struct {
	log      *slog.Logger
	db       *statedb.DB
	ipcache  statedb.RWTable[*tables.IPCacheEntry]
	initDone func(statedb.WriteTxn)
}

func (s *syncer) run(ctx context.Context, health cell.Health) error {
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{ListExisting: false}); err != nil {
		health.Degraded("address events unavailable, polling", err)
	}
	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	first := true
	for {
		if err := s.sync(first); err != nil {
			health.Degraded("listing host addresses", err)
		} else {
			health.OK("host addresses in ipcache")
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-updates:
			// Coalesce a burst (a new veth brings several events).
			time.Sleep(10 * time.Millisecond)
			for len(updates) > 0 {
				<-updates
			}
		case <-ticker.C:
		}
	}
}

// sync makes the host rows match the addresses the kernel has now.
func (s *syncer) sync(first bool) error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	want := map[netip.Prefix]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		ip = ip.Unmap()
		want[netip.PrefixFrom(ip, ip.BitLen())] = true
	}
	wtxn := s.db.WriteTxn(s.ipcache)
	defer wtxn.Abort()
	for p := range want {
		old, _, ok := s.ipcache.Get(wtxn, tables.IPCachePrefixIndex.Query(p))
		if ok && (old.Source == Source || old.Source == "endpoint") {
			continue // ours already, or a pod's address (pods win)
		}
		s.ipcache.Insert(wtxn, &tables.IPCacheEntry{Prefix: p, Identity: tables.IdentityHost, Source: Source, Status: reconciler.StatusPending()})
	}
	for e := range s.ipcache.All(wtxn) {
		if e.Source == Source && !want[e.Prefix] {
			s.ipcache.Delete(wtxn, e)
		}
	}
	if first {
		s.initDone(wtxn)
	}
	wtxn.Commit()
	return nil
}
