package noderoutes

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Source marks the ipcache rows this cell owns.
const Source = "node"

// ipcacheSyncer keeps one ipcache row per address of every other node,
// with the identity remote-node.
type ipcacheSyncer struct {
	db       *statedb.DB
	nodes    statedb.Table[*tables.Node]
	ipcache  statedb.RWTable[*tables.IPCacheEntry]
	initDone func(statedb.WriteTxn)
}

func (s *ipcacheSyncer) run(ctx context.Context, health cell.Health) error {
	for {
		txn := s.db.ReadTxn()
		initialized, initWatch := s.nodes.Initialized(txn)
		_, watch := s.nodes.AllWatch(txn)
		if initialized {
			n := s.sync()
			health.OK(fmt.Sprintf("addresses of other nodes in ipcache: %d", n))
		} else {
			health.OK("waiting for the nodes table")
			watch = initWatch
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		}
	}
}

// sync makes the node rows of the ipcache match the nodes table. A pod's
// address or the host's own keeps its row.
func (s *ipcacheSyncer) sync() int {
	wtxn := s.db.WriteTxn(s.ipcache)
	defer wtxn.Abort()
	want := map[netip.Prefix]bool{}
	for n := range s.nodes.All(wtxn) {
		if n.Local {
			continue
		}
		for _, a := range n.Addresses() {
			want[netip.PrefixFrom(a, a.BitLen())] = true
		}
	}
	for p := range want {
		old, _, ok := s.ipcache.Get(wtxn, tables.IPCachePrefixIndex.Query(p))
		if ok && old.Source != "cidr-policy" {
			continue // ours already, or an endpoint's, the host's, a remote pod's
		}
		s.ipcache.Insert(wtxn, &tables.IPCacheEntry{Prefix: p, Identity: tables.IdentityRemoteNode, Source: Source, Status: reconciler.StatusPending()})
	}
	for e := range s.ipcache.All(wtxn) {
		if e.Source == Source && !want[e.Prefix] {
			s.ipcache.Delete(wtxn, e)
		}
	}
	if s.initDone != nil {
		s.initDone(wtxn)
		s.initDone = nil
	}
	wtxn.Commit()
	return len(want)
}
