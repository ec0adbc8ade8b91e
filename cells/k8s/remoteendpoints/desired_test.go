package remoteendpoints

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/statedb/tables"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func cep(ns, name string, created time.Time, id int64, ips ...string) *v2.CiliumEndpoint {
	o := &v2.CiliumEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created),
		Labels: map[string]string{"membrane.io/node": "b"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}}}
	if id != 0 {
		o.Status.Identity = &v2.EndpointIdentity{ID: id, Labels: []string{"k8s:app=x"}}
	}
	pair := v2.AddressPair{}
	for _, ip := range ips {
		if netip.MustParseAddr(ip).Is4() {
			pair.IPv4 = ip
		} else {
			pair.IPv6 = ip
		}
	}
	o.Status.Networking = &v2.EndpointNetworking{Addressing: []v2.AddressPair{pair}, NodeIP: "b"}
	o.Status.State = "ready"
	return o
}

func TestClaimOf(t *testing.T) {
	c, err := claimOf(newRecord(cep("ns", "p", t0, 1234, "10.0.1.5", "fd00::1:5")))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("fd00::1:5/128")}
	if c.Key != "ns/p" || c.Identity != 1234 || c.Node != "b" || len(c.Prefixes) != 2 || c.Prefixes[0] != want[0] || c.Prefixes[1] != want[1] {
		t.Fatalf("claim = %+v", c)
	}
	if _, err := claimOf(newRecord(cep("ns", "p", t0, 0, "10.0.1.5"))); err == nil {
		t.Fatal("a CEP without identity claims nothing")
	}
	bad := cep("ns", "p", t0, 5, "10.0.1.5")
	bad.Status.Networking.Addressing[0].IPv4 = "not-an-ip"
	if _, err := claimOf(newRecord(bad)); err == nil {
		t.Fatal("a CEP with a bad address is refused")
	}
	if ps := newRecord(bad).prefixes(); len(ps) != 0 {
		t.Fatalf("a bad address is not claimed: %v", ps)
	}
}

func TestWinner(t *testing.T) {
	old := claim{Key: "a/old", Created: t0, Identity: 1}
	newer := claim{Key: "z/new", Created: t0.Add(time.Second), Identity: 2}
	tieA := claim{Key: "a/tie", Created: t0, Identity: 3}
	if w, _ := winner([]claim{old, newer}); w.Key != "z/new" {
		t.Fatalf("newest wins, got %s", w.Key)
	}
	if w, _ := winner([]claim{newer, old}); w.Key != "z/new" {
		t.Fatalf("order does not matter, got %s", w.Key)
	}
	if w, _ := winner([]claim{old, tieA}); w.Key != "a/old" {
		t.Fatalf("tie: smallest key, got %s", w.Key)
	}
	if w, _ := winner([]claim{tieA, old}); w.Key != "a/old" {
		t.Fatalf("tie: smallest key in any order, got %s", w.Key)
	}
	if _, ok := winner(nil); ok {
		t.Fatal("no claims, no winner")
	}
}

func TestDecide(t *testing.T) {
	want := claim{Key: "ns/p", Identity: 7}
	row := func(src string, id tables.NumericIdentity) *tables.IPCacheEntry {
		return &tables.IPCacheEntry{Source: src, Identity: id}
	}
	for _, tc := range []struct {
		name string
		have *tables.IPCacheEntry
		ok   bool
		out  action
	}{
		{"new", nil, true, write},
		{"same", row(Source, 7), true, keep},
		{"identity moved", row(Source, 8), true, write},
		{"gone", row(Source, 7), false, remove},
		{"nothing", nil, false, keep},
		{"local endpoint wins", row("endpoint", 9), true, conflict},
		{"host wins", row("host", 1), true, conflict},
		{"unknown local source wins", row("remote-node", 6), true, conflict},
		{"local row not ours to delete", row("endpoint", 9), false, keep},
		{"pod identity over CIDR identity", row("cidr-policy", 16777217), true, write},
		{"CIDR row not ours to delete", row("cidr-policy", 16777217), false, keep},
	} {
		if got := decide(tc.have, want, tc.ok); got != tc.out {
			t.Errorf("%s: decide = %d, want %d", tc.name, got, tc.out)
		}
	}
}

func TestSlim(t *testing.T) {
	in := cep("ns", "p", t0, 1234, "10.0.1.5")
	in.ResourceVersion = "42"
	out, err := slim(in)
	if err != nil {
		t.Fatal(err)
	}
	r := out.(*record)
	// What the informer's store reads: the key and the version.
	if key, err := cache.MetaNamespaceKeyFunc(r); err != nil || key != "ns/p" || r.GetResourceVersion() != "42" {
		t.Fatalf("record's metadata: key %q (%v), version %q", key, err, r.GetResourceVersion())
	}
	if got := r.GetCreationTimestamp(); !got.Equal(&in.CreationTimestamp) {
		t.Fatalf("record's creation time %v, want %v", got, in.CreationTimestamp)
	}
	c, err := claimOf(r)
	if err != nil || c.Identity != 1234 || c.Node != "b" || len(c.Prefixes) != 1 || !c.Created.Equal(t0) {
		t.Fatalf("slim lost the claim: %+v %v", c, err)
	}
	if again, _ := slim(r); again != any(r) {
		t.Fatal("a record (a resync of the store) is not slimmed again")
	}
	if cp := r.DeepCopyObject().(*record); cp.key != r.key || len(cp.addrs) != 1 || &cp.addrs[0] == &r.addrs[0] {
		t.Fatalf("DeepCopyObject: %+v", cp)
	}
}

// TestSync runs the row computation against a real ipcache table and a
// cache like the informer's: rows follow the CEPs, move with them, and a
// local row wins, giving the address back when it goes.
func TestSync(t *testing.T) {
	db := statedb.New()
	ipc, err := tables.NewIPCacheTable(db)
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(hivetest.Logger(t), db, ipc)
	w.store = cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)

	rows := func() map[string]string { return rowsOf(db, ipc) }
	expect := func(step string, want map[string]string) {
		t.Helper()
		got := rows()
		if len(got) != len(want) {
			t.Fatalf("%s: rows %v, want %v", step, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: rows %v, want %v", step, got, want)
			}
		}
	}
	// As the informer does: the store and the handler get records.
	event := func(old, obj *v2.CiliumEndpoint) {
		var o, n any
		if old != nil {
			o = newRecord(old)
		}
		if obj != nil {
			n = newRecord(obj)
			if err := w.store.Update(n); err != nil {
				t.Fatal(err)
			}
		} else if err := w.store.Delete(o); err != nil {
			t.Fatal(err)
		}
		w.changed(o, n)
	}

	a := cep("ns", "a", t0, 1000, "10.0.1.5", "fd00::1:5")
	event(nil, a)
	expect("created", map[string]string{"10.0.1.5/32": "remote/1000", "fd00::1:5/128": "remote/1000"})

	relabelled := cep("ns", "a", t0, 1001, "10.0.1.5", "fd00::1:5")
	event(a, relabelled)
	expect("relabelled", map[string]string{"10.0.1.5/32": "remote/1001", "fd00::1:5/128": "remote/1001"})

	moved := cep("ns", "a", t0, 1001, "10.0.1.6")
	event(relabelled, moved)
	expect("address changed", map[string]string{"10.0.1.6/32": "remote/1001"})

	// A local endpoint holds 10.0.1.7; a remote CEP claiming it stays out.
	wtxn := db.WriteTxn(ipc)
	ipc.Insert(wtxn, &tables.IPCacheEntry{Prefix: netip.MustParsePrefix("10.0.1.7/32"), Identity: 5000, Source: "endpoint", EndpointID: 12, Status: reconciler.StatusPending()})
	wtxn.Commit()
	clash := cep("other", "b", t0, 2000, "10.0.1.7")
	event(nil, clash)
	expect("local wins", map[string]string{"10.0.1.6/32": "remote/1001", "10.0.1.7/32": "endpoint/5000"})

	// The local endpoint goes: the address goes back to the remote CEP.
	wtxn = db.WriteTxn(ipc)
	local, _, _ := ipc.Get(wtxn, tables.IPCachePrefixIndex.Query(netip.MustParsePrefix("10.0.1.7/32")))
	ipc.Delete(wtxn, local)
	wtxn.Commit()
	w.sync([]netip.Prefix{netip.MustParsePrefix("10.0.1.7/32")})
	expect("local gone", map[string]string{"10.0.1.6/32": "remote/1001", "10.0.1.7/32": "remote/2000"})

	// Two remote CEPs on one address: the newest wins; when it goes, the
	// other takes over.
	newer := cep("other", "c", t0.Add(time.Minute), 3000, "10.0.1.6")
	event(nil, newer)
	expect("newest wins", map[string]string{"10.0.1.6/32": "remote/3000", "10.0.1.7/32": "remote/2000"})
	event(newer, nil)
	expect("older back", map[string]string{"10.0.1.6/32": "remote/1001", "10.0.1.7/32": "remote/2000"})

	event(moved, nil)
	event(clash, nil)
	expect("deleted", map[string]string{})
}

// rowsOf is the ipcache table as "prefix": "source/identity".
func rowsOf(db *statedb.DB, ipc statedb.Table[*tables.IPCacheEntry]) map[string]string {
	out := map[string]string{}
	for r := range ipc.All(db.ReadTxn()) {
		out[r.Prefix.String()] = r.Source + "/" + itoa(r.Identity)
	}
	return out
}

func itoa(id tables.NumericIdentity) string { return strconv.FormatUint(uint64(id), 10) }

// TestNodeLeaves runs the rows against real ipcache and nodes tables:
// before the nodes are listed every CEP counts; then only those of the
// cluster's nodes (by name, or by address for a CEP naming its node's
// address); a node deleted takes its CEPs' rows, though the CEPs stay,
// and brings them back when it returns.
func TestNodeLeaves(t *testing.T) {
	db := statedb.New()
	ipc, err := tables.NewIPCacheTable(db)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := tables.NewNodesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(nodes)
	listed := nodes.RegisterInitializer(wtxn, "test")
	wtxn.Commit()
	w := newWatcher(hivetest.Logger(t), db, ipc)
	w.nodes = nodes
	w.store = cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
	changed := w.refreshNodes()

	rows := func() map[string]string { return rowsOf(db, ipc) }
	expect := func(step string, want map[string]string) {
		t.Helper()
		if got := rows(); !maps.Equal(got, want) {
			t.Fatalf("%s: rows %v, want %v", step, got, want)
		}
	}
	onNode := func(c *v2.CiliumEndpoint, node string) *v2.CiliumEndpoint {
		c.Status.Networking.NodeIP = node
		return c
	}
	add := func(c *v2.CiliumEndpoint) {
		r := newRecord(c)
		if err := w.store.Add(r); err != nil {
			t.Fatal(err)
		}
		w.changed(nil, r)
	}
	nodesChanged := func(step string, f func(statedb.WriteTxn)) {
		t.Helper()
		wtxn := db.WriteTxn(nodes)
		f(wtxn)
		wtxn.Commit()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the nodes table's watch channel did not close", step)
		}
		changed = w.refreshNodes()
	}

	add(onNode(cep("ns", "b1", t0, 1000, "10.0.2.5"), "b"))
	add(onNode(cep("ns", "c1", t0, 1001, "10.0.3.5"), "c"))
	add(onNode(cep("ns", "d1", t0, 1002, "10.0.4.5"), "10.250.0.4")) // Cilium names the node's address
	expect("nodes not listed yet: every CEP counts",
		map[string]string{"10.0.2.5/32": "remote/1000", "10.0.3.5/32": "remote/1001", "10.0.4.5/32": "remote/1002"})

	nodeB := &tables.Node{Name: "b", InternalIPs: []netip.Addr{netip.MustParseAddr("10.250.0.2")}}
	nodeD := &tables.Node{Name: "d", InternalIPs: []netip.Addr{netip.MustParseAddr("10.250.0.4")}}
	nodesChanged("listed", func(wtxn statedb.WriteTxn) {
		nodes.Insert(wtxn, nodeB)
		nodes.Insert(wtxn, nodeD)
		listed(wtxn)
	})
	expect("nodes listed: c is not a node", map[string]string{"10.0.2.5/32": "remote/1000", "10.0.4.5/32": "remote/1002"})

	add(onNode(cep("ns", "c2", t0, 1003, "10.0.3.6"), "c"))
	expect("a CEP of no node", map[string]string{"10.0.2.5/32": "remote/1000", "10.0.4.5/32": "remote/1002"})

	nodesChanged("routes status only", func(wtxn statedb.WriteTxn) {
		n := nodeB.Clone()
		n.RouteStatus = reconciler.StatusDone()
		nodes.Insert(wtxn, n)
	})
	expect("routes status only", map[string]string{"10.0.2.5/32": "remote/1000", "10.0.4.5/32": "remote/1002"})

	nodesChanged("b deleted", func(wtxn statedb.WriteTxn) { nodes.Delete(wtxn, nodeB) })
	expect("b deleted", map[string]string{"10.0.4.5/32": "remote/1002"})

	nodesChanged("c joins, b back", func(wtxn statedb.WriteTxn) {
		nodes.Insert(wtxn, &tables.Node{Name: "c"})
		nodes.Insert(wtxn, nodeB)
	})
	expect("c joins, b back", map[string]string{"10.0.2.5/32": "remote/1000", "10.0.3.5/32": "remote/1001",
		"10.0.3.6/32": "remote/1003", "10.0.4.5/32": "remote/1002"})
}

// TestClaimants follows an address through one claimant, two, three and
// back, and a CEP whose addresses move.
func TestClaimants(t *testing.T) {
	c := newClaimants()
	p, q := netip.MustParsePrefix("10.0.1.5/32"), netip.MustParsePrefix("10.0.1.6/32")
	expect := func(step string, pk, qk []string) {
		t.Helper()
		if got := c.keys(p); !slices.Equal(got, pk) {
			t.Fatalf("%s: keys of %s %v, want %v", step, p, got, pk)
		}
		if got := c.keys(q); !slices.Equal(got, qk) {
			t.Fatalf("%s: keys of %s %v, want %v", step, q, got, qk)
		}
	}
	c.move("ns/a", nil, []netip.Prefix{p})
	c.move("ns/a", nil, []netip.Prefix{p}) // again: no duplicate
	expect("one", []string{"ns/a"}, nil)
	c.move("ns/b", nil, []netip.Prefix{p})
	c.move("ns/c", nil, []netip.Prefix{p})
	expect("three", []string{"ns/a", "ns/b", "ns/c"}, nil)
	c.move("ns/a", []netip.Prefix{p}, []netip.Prefix{q})
	expect("a moved", []string{"ns/b", "ns/c"}, []string{"ns/a"})
	c.move("ns/b", []netip.Prefix{p}, nil)
	expect("b gone", []string{"ns/c"}, []string{"ns/a"})
	c.move("ns/x", []netip.Prefix{p}, nil) // a key that does not claim it
	c.move("ns/c", []netip.Prefix{p}, []netip.Prefix{p})
	expect("unchanged", []string{"ns/c"}, []string{"ns/a"})
	c.move("ns/c", []netip.Prefix{p}, nil)
	c.move("ns/a", []netip.Prefix{q}, nil)
	expect("all gone", nil, nil)
	if len(c.one) != 0 || len(c.more) != 0 {
		t.Fatalf("left behind: %v %v", c.one, c.more)
	}
}
