package endpointmanager

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// startManager runs the endpoint manager cell on stateDir; stop ends it
// as the agent's shutdown does.
func startManager(t *testing.T, stateDir string) (m *EndpointManager, stop func()) {
	t.Helper()
	h := celltest.New(t, stateDir,
		Cell,
		cell.Invoke(func(em *EndpointManager) { m = em }),
	).StartTest()
	return m, h.StopTest
}

// savedIDs reads endpoints.json as a restart would.
func savedIDs(t *testing.T, stateDir string) map[uint16]*tables.Endpoint {
	t.Helper()
	dir, err := statedir.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	var eps []*tables.Endpoint
	if _, err := dir.ReadJSON(endpointsFile, &eps); err != nil {
		t.Fatal(err)
	}
	out := map[uint16]*tables.Endpoint{}
	for _, ep := range eps {
		out[ep.ID] = ep
	}
	return out
}

// An endpoint AddEndpoint returned is in endpoints.json at that moment,
// so an agent killed right after its creation was acknowledged restores
// it; likewise a deletion. Changes other cells make follow shortly.
func TestAcknowledgedEndpointsAreOnDisk(t *testing.T) {
	state := t.TempDir()
	m, _ := startManager(t, state)
	a, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c2", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	if saved := savedIDs(t, state); saved[a.ID] == nil || saved[b.ID] == nil {
		t.Fatalf("endpoints.json holds %v right after AddEndpoint returned, want %d and %d", saved, a.ID, b.ID)
	}
	if _, err := m.RemoveEndpoint(a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if saved := savedIDs(t, state); saved[a.ID] != nil || saved[b.ID] == nil {
		t.Fatalf("endpoints.json holds %v right after RemoveEndpoint returned, want only %d", saved, b.ID)
	}

	// Another cell's write into the row (here the identity) is saved too.
	if _, err := m.Update(b.ID, func(ep *tables.Endpoint) error { ep.Identity = 300; return nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for savedIDs(t, state)[b.ID].Identity != 300 {
		if time.Now().After(deadline) {
			t.Fatal("the identity written into the row never reached endpoints.json")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A second agent on what the first left on disk, the first never
	// stopped (as after a kill), restores what was acknowledged. (A copy:
	// the first still holds its state dir's lock, as a live agent would.)
	m2, _ := startManager(t, celltest.CopyStateDir(t, state))
	txn := m2.db.ReadTxn()
	if _, _, ok := m2.endpoints.Get(txn, tables.EndpointIDIndex.Query(a.ID)); ok {
		t.Errorf("deleted endpoint %d restored", a.ID)
	}
	if ep, _, ok := m2.endpoints.Get(txn, tables.EndpointIDIndex.Query(b.ID)); !ok || ep.State != tables.StateRestoring || ep.Identity != 300 {
		t.Errorf("endpoint %d restored as %+v (found %v)", b.ID, ep, ok)
	}
}

// Once the manager has stopped, nothing is acknowledged that the file
// does not hold.
func TestNoAcknowledgementAfterStop(t *testing.T) {
	state := t.TempDir()
	m, stop := startManager(t, state)
	stop()
	_, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")})
	if !errors.Is(err, errNotSaved) {
		t.Fatalf("AddEndpoint after stop: %v, want errNotSaved", err)
	}
	if saved := savedIDs(t, state); len(saved) != 0 {
		t.Fatalf("endpoints.json holds %v", saved)
	}
}
