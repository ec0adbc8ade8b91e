package endpointmanager

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

type recorder struct{ created, deleted []uint16 }

func (r *recorder) EndpointCreated(ep *tables.Endpoint) { r.created = append(r.created, ep.ID) }
func (r *recorder) EndpointDeleted(ep *tables.Endpoint) { r.deleted = append(r.deleted, ep.ID) }

func newManager(t *testing.T) *EndpointManager {
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	return &EndpointManager{log: slog.Default(), db: db, endpoints: eps, ids: newIDAllocator()}
}

func TestAddEndpointRefusesIDAndTellsSubscribers(t *testing.T) {
	m := newManager(t)
	var r recorder
	m.Subscribe(&r)

	if _, err := m.AddEndpoint(&tables.Endpoint{ID: 7, ContainerID: "c0", ContainerIfName: "eth0"}); !errors.Is(err, ErrIDAlreadySet) {
		t.Fatalf("AddEndpoint with an ID: %v, want ErrIDAlreadySet", err)
	}
	a, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")})
	if err != nil || a.ID == 0 {
		t.Fatalf("AddEndpoint: %v %+v", err, a)
	}
	// Duplicates of attachment and address name the holder and leave no ID taken.
	var dup *DuplicateError
	if _, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c1", ContainerIfName: "eth0"}); !errors.As(err, &dup) || dup.Holder.ID != a.ID {
		t.Fatalf("duplicate attachment: %v", err)
	}
	if _, err := m.AddEndpoint(&tables.Endpoint{ContainerID: "c2", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.1")}); !errors.As(err, &dup) {
		t.Fatalf("duplicate IP: %v", err)
	}
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
	if _, err := m.RemoveEndpoint(a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RemoveEndpoint(a.ID, "test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if len(r.created) != 2 || r.created[0] != a.ID || r.created[1] != 99 || len(r.deleted) != 1 || r.deleted[0] != a.ID {
		t.Fatalf("subscriber saw created %v deleted %v", r.created, r.deleted)
	}
	if ep, err := m.Lookup(m.db.ReadTxn(), "container-id:c3"); err != nil || ep.ID != 99 {
		t.Fatalf("lookup: %v %+v", err, ep)
	}
}
