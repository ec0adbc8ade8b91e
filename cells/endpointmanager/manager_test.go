package endpointmanager

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

func newManager(t *testing.T) *EndpointManager {
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := tables.NewPodsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	return &EndpointManager{log: slog.Default(), db: db, endpoints: eps, pods: pods, ids: newIDAllocator()}
}

// changesSeen reads what a follower of the endpoints table learns since
// its last call: the IDs created and deleted.
type changesSeen struct {
	db      *statedb.DB
	changes statedb.ChangeIterator[*tables.Endpoint]
}

func followEndpoints(t *testing.T, m *EndpointManager) *changesSeen {
	wtxn := m.db.WriteTxn(m.endpoints)
	changes, err := m.endpoints.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(changes.Close)
	return &changesSeen{db: m.db, changes: changes}
}

func (c *changesSeen) next() (created, deleted []uint16) {
	seq, _ := c.changes.Next(c.db.ReadTxn())
	for ch := range seq {
		if ch.Deleted {
			deleted = append(deleted, ch.Object.ID)
		} else {
			created = append(created, ch.Object.ID)
		}
	}
	return created, deleted
}

// Those who care that endpoints come and go follow the endpoints table's
// changes: they see each creation and deletion once, and nothing for a
// refused add.
func TestAddEndpointRefusesIDAndTellsSubscribers(t *testing.T) {
	m := newManager(t)
	follower := followEndpoints(t, m)
	var created, deleted []uint16
	observe := func() {
		c, d := follower.next()
		created, deleted = append(created, c...), append(deleted, d...)
	}

	if _, err := m.AddEndpoint(&tables.Endpoint{ID: 7, ContainerID: "c0", ContainerIfName: "eth0"}); !errors.Is(err, ErrIDAlreadySet) {
		t.Fatalf("AddEndpoint with an ID: %v, want ErrIDAlreadySet", err)
	}
	observe()
	a, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")})
	if err != nil || a.ID == 0 {
		t.Fatalf("AddEndpoint: %v %+v", err, a)
	}
	observe()
	// Duplicates of attachment and address name the holder and leave no ID taken.
	var dup *DuplicateError
	if _, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0"}); !errors.As(err, &dup) || dup.Holder.ID != a.ID {
		t.Fatalf("duplicate attachment: %v", err)
	}
	if _, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c2", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")}); !errors.As(err, &dup) {
		t.Fatalf("duplicate IP: %v", err)
	}
	// An explicit ID in use is a duplicate (naming the holder) before it is
	// an ID the caller may not choose.
	if _, err := m.AddEndpoint(&tables.Endpoint{ID: a.ID, ContainerID: "c4", ContainerIfName: "eth0"}); !errors.As(err, &dup) || dup.Holder.ID != a.ID {
		t.Fatalf("explicit ID in use: %v, want a DuplicateError", err)
	}
	observe()
	if n := len(m.ids.inUse); n != 1 {
		t.Fatalf("%d IDs in use after refused adds, want 1", n)
	}
	// A restore keeps the ID, and refuses one in use.
	if _, err := m.RestoreEndpoint(&tables.Endpoint{ID: a.ID, ContainerID: "c3", ContainerIfName: "eth0"}); err == nil {
		t.Fatal("restore of an ID in use accepted")
	}
	b, err := m.RestoreEndpoint(&tables.Endpoint{ID: 99, ContainerID: "c3", ContainerIfName: "eth0"})
	if err != nil || b.ID != 99 {
		t.Fatalf("restore: %v %+v", err, b)
	}
	observe()
	if _, err := m.RemoveEndpoint(a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RemoveEndpoint(a.ID, "test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	observe()
	if !slices.Equal(created, []uint16{a.ID, 99}) || !slices.Equal(deleted, []uint16{a.ID}) {
		t.Fatalf("the endpoints table's changes said created %v deleted %v", created, deleted)
	}
	if ep, _, ok := m.endpoints.Get(m.db.ReadTxn(), tables.EndpointContainerIndex.Query("c3")); !ok || ep.ID != 99 {
		t.Fatalf("lookup: %v %+v", ok, ep)
	}
}
