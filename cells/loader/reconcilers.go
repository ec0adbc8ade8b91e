package loader

import (
	"context"
	"errors"
	"iter"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/datapath/maps"
	tables "github.com/membrane-net/membrane/statedb"
)

// ipcacheOps writes ipcache rows into the LPM map.
type ipcacheOps struct{ m *Maps }

func (o ipcacheOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.IPCacheEntry) error {
	return o.m.IPCache.Put(maps.NewIPCacheKey(e.Prefix), maps.IPCacheValue{Identity: e.Identity})
}

func (o ipcacheOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.IPCacheEntry) error {
	return ignoreNotExist(o.m.IPCache.Delete(maps.NewIPCacheKey(e.Prefix)))
}

// Prune removes entries no row explains (left by a previous run).
func (o ipcacheOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.IPCacheEntry, statedb.Revision]) error {
	want := map[maps.IPCacheKey]bool{}
	for e := range objs {
		want[maps.NewIPCacheKey(e.Prefix)] = true
	}
	return prune(o.m.IPCache, func(k maps.IPCacheKey) bool { return want[k] })
}

// endpointOps writes bpf-endpoints rows into the endpoints map.
type endpointOps struct{ m *Maps }

func (o endpointOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.EndpointMapEntry) error {
	return o.m.Endpoints.Put(maps.EndpointKey{IfIndex: e.IfIndex},
		maps.NewEndpointValue(e.EndpointID, e.Identity, e.IPv4, e.IPv6, e.MAC, e.HostMAC))
}

func (o endpointOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.EndpointMapEntry) error {
	return ignoreNotExist(o.m.Endpoints.Delete(maps.EndpointKey{IfIndex: e.IfIndex}))
}

func (o endpointOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.EndpointMapEntry, statedb.Revision]) error {
	want := map[maps.EndpointKey]bool{}
	for e := range objs {
		want[maps.EndpointKey{IfIndex: e.IfIndex}] = true
	}
	return prune(o.m.Endpoints, func(k maps.EndpointKey) bool { return want[k] })
}

func prune[K comparable](m *ebpf.Map, keep func(K) bool) error {
	var (
		k     K
		stale []K
	)
	it := m.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		if !keep(k) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	var errs []error
	for _, k := range stale {
		errs = append(errs, ignoreNotExist(m.Delete(k)))
	}
	return errors.Join(errs...)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
