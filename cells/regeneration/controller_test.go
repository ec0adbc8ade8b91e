package regeneration

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testRegen is the regeneration cell with the shared tables and nothing
// else: the test writes endpoint-policy rows as the policy engine would
// and marks rows Done as the loader's reconcilers would.
type testRegen struct {
	db        *statedb.DB
	endpoints statedb.RWTable[*tables.Endpoint]
	ipcache   statedb.RWTable[*tables.IPCacheEntry]
	epmap     statedb.RWTable[*tables.EndpointMapEntry]
	policy    statedb.RWTable[*tables.EndpointPolicy]
}

func startTestRegen(t *testing.T) *testRegen {
	r := &testRegen{}
	celltest.New(t, "",
		cell.Provide(func() *tables.PolicyComputed { return &tables.PolicyComputed{} }),
		Cell,
		cell.Invoke(func(db *statedb.DB, ep statedb.RWTable[*tables.Endpoint], ipc statedb.RWTable[*tables.IPCacheEntry],
			epm statedb.RWTable[*tables.EndpointMapEntry], pol statedb.RWTable[*tables.EndpointPolicy]) {
			r.db, r.endpoints, r.ipcache, r.epmap, r.policy = db, ep, ipc, epm, pol
			// Nothing to restore.
			celltest.HoldInitialization(db, ep, "test")()
		}),
	).StartTest()
	return r
}

func (r *testRegen) controller() *controller {
	return &controller{db: r.db, endpoints: r.endpoints, ipcache: r.ipcache, epmap: r.epmap, policy: r.policy, withPolicy: true}
}

func insert[T any](t *testing.T, db *statedb.DB, tbl statedb.RWTable[T], rows ...T) {
	t.Helper()
	wtxn := db.WriteTxn(tbl)
	for _, row := range rows {
		if _, _, err := tbl.Insert(wtxn, row); err != nil {
			t.Fatal(err)
		}
	}
	wtxn.Commit()
}

func policyRow(ep uint16, id tables.NumericIdentity, st reconciler.Status) *tables.EndpointPolicy {
	return &tables.EndpointPolicy{EndpointID: ep, Identity: id, Revision: 1, IngressEnforced: true, Status: st}
}

var podIP = netip.MustParseAddr("10.0.0.2")

func (r *testRegen) endpoint(id uint16) *tables.Endpoint {
	ep, _, ok := r.endpoints.Get(r.db.ReadTxn(), tables.EndpointIDIndex.Query(id))
	if !ok {
		return nil
	}
	return ep
}

func (r *testRegen) ipcacheIdentity() (tables.NumericIdentity, bool) {
	row, _, ok := r.ipcache.Get(r.db.ReadTxn(), tables.IPCachePrefixIndex.Query(netip.PrefixFrom(podIP, 32)))
	if !ok {
		return 0, false
	}
	return row.Identity, true
}

// markIPCacheDone stands for the ipcache reconciler.
func (r *testRegen) markIPCacheDone(t *testing.T) {
	t.Helper()
	wtxn := r.db.WriteTxn(r.ipcache)
	for row := range r.ipcache.All(wtxn) {
		if row.Status.Kind != reconciler.StatusKindDone {
			row = row.Clone()
			row.Status = reconciler.StatusDone()
			r.ipcache.Insert(wtxn, row)
		}
	}
	wtxn.Commit()
}

// eventually waits for cond; the deadline only turns a hang into a failure.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

// A new endpoint becomes ready only once the policy rows written before its
// own (the peers whose selectors match its identity) are in the datapath.
func TestNewEndpointReadyAfterPeersPolicy(t *testing.T) {
	r := startTestRegen(t)
	c := r.controller()

	insert(t, r.db, r.policy, policyRow(1, 100, reconciler.StatusPending())) // peer, not yet in the kernel
	insert(t, r.db, r.endpoints, &tables.Endpoint{ID: 2, IPv4: podIP, Identity: 200, LabelsResolved: true, State: tables.StateWaitingToRegenerate})
	insert(t, r.db, r.policy, policyRow(2, 200, reconciler.StatusDone()))

	// Its rows are written at once (nobody knows its address yet) ...
	eventually(t, "the ipcache row", func() bool { id, ok := r.ipcacheIdentity(); return ok && id == 200 })
	r.markIPCacheDone(t)
	ep := r.endpoint(2)
	if !c.peersPending(r.db.ReadTxn(), ep) {
		t.Fatal("peersPending = false with the peer's older row pending")
	}
	// ... but it is not ready while the peer's row is pending.
	time.Sleep(50 * time.Millisecond)
	if ep := r.endpoint(2); ep.State != tables.StateRegenerating {
		t.Fatalf("endpoint %s before the peer's policy is in the datapath", ep.State)
	}

	insert(t, r.db, r.policy, policyRow(1, 100, reconciler.StatusDone()))
	eventually(t, "ready", func() bool { return r.endpoint(2).State == tables.StateReady })
	if ep := r.endpoint(2); ep.DatapathIdentity != 200 {
		t.Errorf("DatapathIdentity = %d, want 200", ep.DatapathIdentity)
	}

	// A row in error does not hold others back, and a newer pending row
	// (written after the endpoint's) is not waited for.
	insert(t, r.db, r.policy, policyRow(1, 100, reconciler.StatusError(errTest)))
	if c.peersPending(r.db.ReadTxn(), r.endpoint(2)) {
		t.Error("peersPending = true for a peer row in error")
	}
	insert(t, r.db, r.policy, policyRow(3, 100, reconciler.StatusPending()))
	if c.peersPending(r.db.ReadTxn(), r.endpoint(2)) {
		t.Error("peersPending = true for a row newer than the endpoint's")
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("map full")

// A relabelled endpoint's address keeps its old identity until the peers'
// policies know the new one, and the old identity stays referenced (not
// released) until the switch is in the datapath.
func TestRelabelSwitchesAddressAfterPeersPolicy(t *testing.T) {
	r := startTestRegen(t)
	c := r.controller()

	insert(t, r.db, r.endpoints, &tables.Endpoint{ID: 2, IPv4: podIP, Identity: 200, LabelsResolved: true, State: tables.StateWaitingToRegenerate})
	insert(t, r.db, r.policy, policyRow(2, 200, reconciler.StatusDone()))
	eventually(t, "the ipcache row", func() bool { _, ok := r.ipcacheIdentity(); return ok })
	r.markIPCacheDone(t)
	eventually(t, "ready", func() bool { return r.endpoint(2).State == tables.StateReady })

	// Relabel: the engine writes the peer's row (its selector now matches
	// 300) and then the endpoint's row for 300.
	wtxn := r.db.WriteTxn(r.endpoints)
	ep := r.endpoint(2).Clone()
	ep.Identity = 300
	if err := ep.SetState(tables.StateWaitingToRegenerate, "labels changed"); err != nil {
		t.Fatal(err)
	}
	r.endpoints.Insert(wtxn, ep)
	wtxn.Commit()
	insert(t, r.db, r.policy, policyRow(1, 100, reconciler.StatusPending()))
	insert(t, r.db, r.policy, policyRow(2, 300, reconciler.StatusDone()))

	eventually(t, "regenerating", func() bool { return r.endpoint(2).State == tables.StateRegenerating })
	if !c.mustWaitForPeers(r.db.ReadTxn(), r.endpoint(2)) {
		t.Fatal("mustWaitForPeers = false while the peer's row is pending")
	}
	time.Sleep(50 * time.Millisecond)
	if id, _ := r.ipcacheIdentity(); id != 200 {
		t.Fatalf("address switched to %d before the peer's policy knows it", id)
	}
	for _, id := range []tables.NumericIdentity{200, 300} {
		if _, _, ok := r.endpoints.Get(r.db.ReadTxn(), tables.EndpointIdentityIndex.Query(id)); !ok {
			t.Errorf("identity %d not referenced by the endpoint during the switch", id)
		}
	}

	insert(t, r.db, r.policy, policyRow(1, 100, reconciler.StatusDone()))
	eventually(t, "the address to switch", func() bool { id, _ := r.ipcacheIdentity(); return id == 300 })
	r.markIPCacheDone(t)
	eventually(t, "ready", func() bool { return r.endpoint(2).State == tables.StateReady })
	if _, _, ok := r.endpoints.Get(r.db.ReadTxn(), tables.EndpointIdentityIndex.Query(200)); ok {
		t.Error("old identity still referenced after the switch")
	}
}
