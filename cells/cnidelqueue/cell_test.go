package cnidelqueue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/internal/delqueue"
	"github.com/membrane-net/membrane/statedb/tables"
)

type fakeManager struct {
	removed []uint16
	fail    map[uint16]bool
}

func (m *fakeManager) RemoveEndpoint(id uint16, _ string) (*tables.Endpoint, error) {
	if m.fail[id] {
		return nil, errors.New("disk full")
	}
	m.removed = append(m.removed, id)
	return nil, nil
}

type fakeIPAM struct {
	rows     []*tables.IPAMAllocation
	released []netip.Addr
}

func (f *fakeIPAM) List(owner string) []*tables.IPAMAllocation {
	var out []*tables.IPAMAllocation
	for _, r := range f.rows {
		if r.Owner == owner {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeIPAM) Release(ip netip.Addr) (*tables.IPAMAllocation, error) {
	f.released = append(f.released, ip)
	return nil, nil
}

// One start's worth of queue: a DEL done (endpoint and address), a DEL
// of a re-added attachment (nothing touched), a DEL of an address
// allocated after it (kept), a DEL whose endpoint removal fails (stays
// queued), a DEL of an unknown pod (dropped) and a file that is not a DEL
// (set aside, logged).
func TestRun(t *testing.T) {
	stateDir := t.TempDir()
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	before, after := t0.Add(-time.Minute), t0.Add(time.Minute)
	celltest.Insert(t, db, eps,
		&tables.Endpoint{ID: 1, ContainerID: "gone", ContainerIfName: "eth0", HostIfIndex: 10, Created: before},
		&tables.Endpoint{ID: 2, ContainerID: "readded", ContainerIfName: "eth0", HostIfIndex: 20, Created: after},
		&tables.Endpoint{ID: 3, ContainerID: "failing", ContainerIfName: "eth0", HostIfIndex: 30, Created: before},
	)
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	ipam := &fakeIPAM{rows: []*tables.IPAMAllocation{
		{IP: ip("10.0.0.1"), Owner: "gone:eth0", Created: before},
		{IP: ip("10.0.0.2"), Owner: "readded:eth0", Created: after},
		{IP: ip("10.0.0.4"), Owner: "newaddr:eth0", Created: after},
	}}
	mgr := &fakeManager{fail: map[uint16]bool{3: true}}

	l, err := delqueue.TryShared(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{"gone", "readded", "newaddr", "failing", "unknown"} {
		e := &delqueue.Entry{Version: delqueue.Version, ContainerID: cid, IfName: "eth0", Queued: t0}
		if cid == "gone" {
			e.HostIfIndex = 10
		}
		if _, err := l.Enqueue(e); err != nil {
			t.Fatal(err)
		}
	}
	corrupt := l.Path(delqueue.Name("torn", "eth0"))
	if err := os.WriteFile(corrupt, []byte(`{"version":1,"contai`), 0o600); err != nil {
		t.Fatal(err)
	}
	l.Unlock()

	var logs bytes.Buffer
	q := &processor{log: slog.New(slog.NewTextHandler(&logs, nil)), db: db, endpoints: eps, manager: mgr, ipam: ipam}
	x, err := delqueue.Acquire(context.Background(), stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Unlock()
	q.run(x)

	if !slices.Equal(mgr.removed, []uint16{1}) {
		t.Errorf("endpoints removed: %v, want [1]", mgr.removed)
	}
	if !slices.Equal(ipam.released, []netip.Addr{ip("10.0.0.1")}) {
		t.Errorf("addresses released: %v, want [10.0.0.1]", ipam.released)
	}
	items, err := x.Items()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Entry == nil || items[0].Entry.ContainerID != "failing" {
		t.Errorf("left in the queue: %+v, want the failed DEL only", items)
	}
	if _, err := os.Stat(corrupt); !os.IsNotExist(err) {
		t.Errorf("the corrupt file is still in the queue: %v", err)
	}
	for _, want := range []string{"Not a queued CNI DEL: set aside", "added again after it", "stays queued", "done=4 failed=1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
