package loader

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ipcacheOps writes ipcache rows into the LPM map.
type ipcacheOps struct{ dp *Datapath }

func (o ipcacheOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.IPCacheEntry) error {
	return o.dp.Maps.IPCache.Put(maps.NewIPCacheKey(e.Prefix), maps.IPCacheValue{Identity: e.Identity, IfIndex: e.IfIndex})
}

func (o ipcacheOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.IPCacheEntry) error {
	return ignoreNotExist(o.dp.Maps.IPCache.Delete(maps.NewIPCacheKey(e.Prefix)))
}

// Prune removes entries no row explains (left by a previous run).
func (o ipcacheOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.IPCacheEntry, statedb.Revision]) error {
	want := map[maps.IPCacheKey]bool{}
	for e := range objs {
		want[maps.NewIPCacheKey(e.Prefix)] = true
	}
	return prune(o.dp.Maps.IPCache, func(k maps.IPCacheKey) bool { return want[k] })
}

// endpointOps writes bpf-endpoints rows into the endpoints map and
// attaches the programs to the interface. The entry is written first so
// the programs never run on the veth without knowing whose it is.
type endpointOps struct{ dp *Datapath }

func endpointValue(e *tables.EndpointMapEntry) maps.EndpointValue {
	v := maps.NewEndpointValue(e.EndpointID, e.Identity, e.IPv4, e.IPv6, e.MAC, e.HostMAC)
	if e.IngressEnforced {
		v.Flags |= maps.EndpointFlagIngressEnforced
	}
	if e.EgressEnforced {
		v.Flags |= maps.EndpointFlagEgressEnforced
	}
	return v
}

func (o endpointOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.EndpointMapEntry) error {
	if err := o.dp.Maps.Endpoints.Put(maps.EndpointKey{IfIndex: e.IfIndex}, endpointValue(e)); err != nil {
		return err
	}
	return o.dp.Attacher.Attach(int(e.IfIndex))
}

func (o endpointOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.EndpointMapEntry) error {
	err := o.dp.Attacher.Detach(int(e.IfIndex))
	return errors.Join(err, ignoreNotExist(o.dp.Maps.Endpoints.Delete(maps.EndpointKey{IfIndex: e.IfIndex})))
}

// Prune removes entries and attachments of interfaces no row names.
func (o endpointOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.EndpointMapEntry, statedb.Revision]) error {
	want := map[uint32]bool{}
	for e := range objs {
		want[e.IfIndex] = true
	}
	var errs []error
	attached, err := o.dp.Attacher.Attached()
	errs = append(errs, err)
	for _, idx := range attached {
		if !want[uint32(idx)] {
			errs = append(errs, o.dp.Attacher.Detach(idx))
		}
	}
	errs = append(errs, prune(o.dp.Maps.Endpoints, func(k maps.EndpointKey) bool { return want[k.IfIndex] }))
	return errors.Join(errs...)
}

// policyOps writes each endpoint's computed policy into its slice of the
// policy map, changing only the keys that differ from what it wrote last.
type policyOps struct {
	dp      *Datapath
	mu      sync.Mutex
	written map[uint16]map[maps.PolicyKey]maps.PolicyValue
}

func newPolicyOps(dp *Datapath) *policyOps {
	return &policyOps{dp: dp, written: map[uint16]map[maps.PolicyKey]maps.PolicyValue{}}
}

// policyKeys translates a row into map keys: each entry becomes the LPM
// keys of its protocol and port range (maps.PolicyKeys), with its
// verdict. It decides no precedence. Deny precedence has one place, the
// policy engine's entry set (cells/policy/mapstate.go), which works on
// port ranges before they become keys: there it can be correct, here it
// could not. An LPM lookup returns only the longest match, so a deny of
// every TCP port and an allow of TCP port 80 for one identity share no
// key, and the allow would win; only cutting the allow around the deny
// (on ranges) prevents that. The engine does so, and so the allows and
// denies of an identity never overlap and no two entries of a row ask
// one key for different verdicts. A row that does is refused (err), not
// resolved: the keys are still returned, for deleting and pruning.
func policyKeys(p *tables.EndpointPolicy) (map[maps.PolicyKey]maps.PolicyValue, error) {
	out := map[maps.PolicyKey]maps.PolicyValue{}
	var err error
	for _, e := range p.Entries {
		var v maps.PolicyValue
		if e.Deny {
			v.Flags = maps.PolicyFlagDeny
		}
		for _, k := range maps.PolicyKeys(p.EndpointID, e.Key.Direction, e.Key.Identity, e.Key.Protocol, e.Key.Port, e.Key.EndPort) {
			if old, ok := out[k]; ok && old != v && err == nil {
				err = fmt.Errorf("policy of endpoint %d: entry %s (deny=%v) and another entry ask key %s for different verdicts; "+
					"the policy engine must not write overlapping allows and denies", p.EndpointID, e.Key, e.Deny, k)
			}
			out[k] = v
		}
	}
	return out, err
}

func (o *policyOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, p *tables.EndpointPolicy) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	want, err := policyKeys(p)
	if err != nil {
		return err
	}
	old := o.written[p.EndpointID]
	var errs []error
	// Add before removing, so an entry being replaced by a broader one
	// never leaves a gap.
	for k, v := range want {
		if ov, ok := old[k]; ok && ov == v {
			continue
		}
		errs = append(errs, o.dp.Maps.Policy.Put(k, v))
	}
	for k := range old {
		if _, ok := want[k]; !ok {
			errs = append(errs, ignoreNotExist(o.dp.Maps.Policy.Delete(k)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Forget what we think is written: the retry rewrites everything.
		delete(o.written, p.EndpointID)
		return err
	}
	o.written[p.EndpointID] = want
	return nil
}

func (o *policyOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, p *tables.EndpointPolicy) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	old, ok := o.written[p.EndpointID]
	if !ok {
		old, _ = policyKeys(p) // only the keys matter
	}
	var errs []error
	for k := range old {
		errs = append(errs, ignoreNotExist(o.dp.Maps.Policy.Delete(k)))
	}
	delete(o.written, p.EndpointID)
	return errors.Join(errs...)
}

func (o *policyOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.EndpointPolicy, statedb.Revision]) error {
	want := map[maps.PolicyKey]bool{}
	for p := range objs {
		keys, _ := policyKeys(p) // only the keys matter
		for k := range keys {
			want[k] = true
		}
	}
	return prune(o.dp.Maps.Policy, func(k maps.PolicyKey) bool { return want[k] })
}

func prune[K comparable](m *ebpf.Map, keep func(K) bool) error {
	var (
		k     K
		v     []byte
		stale []K
	)
	it := m.Iterate()
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
