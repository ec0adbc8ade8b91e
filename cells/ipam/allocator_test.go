package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// newTestIPAM builds an IPAM on a fresh database, persisting into dir, and
// loads whatever dir holds.
func newTestIPAM(t *testing.T, cfg Config, dir string) *IPAM {
	t.Helper()
	db := statedb.New()
	tbl, err := tables.NewIPAMTable(db)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := statedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newIPAM(hivetest.Logger(t), db, tbl, sd, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if init, _ := tbl.Initialized(db.ReadTxn()); init {
		t.Fatal("ipam table initialized before the allocations were restored")
	}
	if _, _, err := m.start(); err != nil {
		t.Fatal(err)
	}
	if init, _ := tbl.Initialized(db.ReadTxn()); !init {
		t.Fatal("ipam table not initialized after start")
	}
	return m
}

func mustAllocate(t *testing.T, m *IPAM, owner string, fam Family) *Result {
	t.Helper()
	res, err := m.Allocate(owner, "default/"+owner, fam)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", owner, err)
	}
	return res
}

func ips(rows []*tables.IPAMAllocation) []string {
	var s []string
	for _, r := range rows {
		s = append(s, r.IP.String())
	}
	return s
}

// Fill a /29 and check that exactly the five pod addresses come out.
func TestAllocateNeverHandsOutReservedAddresses(t *testing.T) {
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/29", PodCIDRV6: "fd00:9::/126"}, t.TempDir())

	var v4, v6 []string
	for i := 0; ; i++ {
		res, err := m.Allocate(fmt.Sprintf("c%d:eth0", i), "", IPv4)
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("allocation %d: want ErrExhausted, got %v", i, err)
			}
			break
		}
		if res.IPv6 != nil {
			t.Fatalf("asked for ipv4 only, got %v", res.IPv6.IP)
		}
		if res.IPv4.Gateway.String() != "10.9.0.1" || res.IPv4.CIDR.String() != "10.9.0.0/29" {
			t.Fatalf("wrong gateway/cidr in %+v", res.IPv4)
		}
		v4 = append(v4, res.IPv4.IP.String())
	}
	if got, want := strings.Join(v4, " "), "10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.6"; got != want {
		t.Errorf("IPv4 handed out %s; want %s (never .0 network, .1 router, .7 broadcast)", got, want)
	}
	for i := 0; ; i++ {
		res, err := m.Allocate(fmt.Sprintf("d%d:eth0", i), "", IPv6)
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("v6 allocation %d: want ErrExhausted, got %v", i, err)
			}
			break
		}
		v6 = append(v6, res.IPv6.IP.String())
	}
	if got, want := strings.Join(v6, " "), "fd00:9::2 fd00:9::3"; got != want {
		t.Errorf("IPv6 handed out %s; want %s (never ::0 anycast, ::1 router)", got, want)
	}
	// With the range full, releasing one address makes it the only
	// candidate: the search wraps past the top without touching broadcast.
	if _, err := m.Release(netip.MustParseAddr("10.9.0.4")); err != nil {
		t.Fatal(err)
	}
	if res := mustAllocate(t, m, "again:eth0", IPv4); res.IPv4.IP.String() != "10.9.0.4" {
		t.Errorf("only free address is 10.9.0.4, got %s", res.IPv4.IP)
	}
	if r, _ := m.Router(IPv4); r.String() != "10.9.0.1" {
		t.Errorf("Router(ipv4) = %s", r)
	}
	if r, _ := m.Router(IPv6); r.String() != "fd00:9::1" {
		t.Errorf("Router(ipv6) = %s", r)
	}
}

func TestExhaustionErrorSaysWhatToDo(t *testing.T) {
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/30"}, t.TempDir())
	if res := mustAllocate(t, m, "a:eth0", AnyFamily); res.IPv4.IP.String() != "10.9.0.2" {
		t.Fatalf("the only pod address of a /30 is .2, got %s", res.IPv4.IP)
	}
	_, err := m.Allocate("b:eth0", "", AnyFamily)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
	for _, w := range []string{"10.9.0.0/30", "1 of 1", "--pod-cidr", "release"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("exhaustion error %q does not mention %q", err, w)
		}
	}
	if n := len(m.List("")); n != 1 {
		t.Errorf("failed allocation left rows behind: %d rows", n)
	}
}

func TestReleaseIsNotImmediatelyReused(t *testing.T) {
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/29"}, t.TempDir())
	a := mustAllocate(t, m, "a:eth0", AnyFamily).IPv4.IP // .2
	mustAllocate(t, m, "b:eth0", AnyFamily)              // .3
	if _, err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range []string{"c", "d", "e", "f"} {
		got = append(got, mustAllocate(t, m, o+":eth0", AnyFamily).IPv4.IP.String())
	}
	// .2 comes back only after the search wrapped around the range.
	if want := "10.9.0.4 10.9.0.5 10.9.0.6 10.9.0.2"; strings.Join(got, " ") != want {
		t.Errorf("after releasing .2 got %s; want %s", strings.Join(got, " "), want)
	}
}

func TestReleaseErrors(t *testing.T) {
	m := newTestIPAM(t, DefaultConfig, t.TempDir())
	a := mustAllocate(t, m, "a:eth0", AnyFamily).IPv4.IP

	for _, tc := range []struct {
		ip   string
		want error
	}{
		{"10.200.0.1", ErrReserved},
		{"10.200.0.99", ErrNotAllocated},
		{"192.168.1.1", ErrNotAllocated},
	} {
		if _, err := m.Release(netip.MustParseAddr(tc.ip)); !errors.Is(err, tc.want) {
			t.Errorf("Release(%s) = %v; want %v", tc.ip, err, tc.want)
		}
	}
	if _, err := m.Release(netip.Addr{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Release(invalid) = %v", err)
	}
	rel, err := m.Release(a)
	if err != nil || rel.Owner != "a:eth0" || rel.Pod != "default/a:eth0" {
		t.Fatalf("Release(%s) = %+v, %v", a, rel, err)
	}
	if _, err := m.Release(a); !errors.Is(err, ErrNotAllocated) {
		t.Errorf("second Release(%s) = %v; want ErrNotAllocated", a, err)
	}
}

func TestReleaseOwner(t *testing.T) {
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"}, t.TempDir())
	mustAllocate(t, m, "a:eth0", AnyFamily)
	mustAllocate(t, m, "b:eth0", AnyFamily)
	if got := ips(m.List("a:eth0")); strings.Join(got, " ") != "10.9.0.2 fd00:9::2" {
		t.Fatalf("List(a) = %v", got)
	}
	rel, err := m.ReleaseOwner("a:eth0")
	if err != nil || len(rel) != 2 {
		t.Fatalf("ReleaseOwner = %v, %v", ips(rel), err)
	}
	if got := ips(m.List("")); strings.Join(got, " ") != "10.9.0.3 fd00:9::3" {
		t.Errorf("left after ReleaseOwner(a): %v", got)
	}
	if rel, err := m.ReleaseOwner("a:eth0"); err != nil || len(rel) != 0 {
		t.Errorf("second ReleaseOwner = %v, %v; want nothing, no error", ips(rel), err)
	}
	if _, err := m.ReleaseOwner(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReleaseOwner(\"\") = %v", err)
	}
}

func TestDualStackAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/126"}, dir)
	for _, o := range []string{"a", "b"} {
		res := mustAllocate(t, m, o+":eth0", AnyFamily)
		if res.IPv4 == nil || res.IPv6 == nil {
			t.Fatalf("dual stack allocation gave %+v", res)
		}
	}
	// The v6 /126 is full; the v4 part of this request must not stick.
	if _, err := m.Allocate("c:eth0", "", AnyFamily); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "fd00:9::/126") {
		t.Fatalf("want v6 exhaustion, got %v", err)
	}
	if got := ips(m.List("")); strings.Join(got, " ") != "10.9.0.2 10.9.0.3 fd00:9::2 fd00:9::3" {
		t.Fatalf("after failed dual-stack allocation: %v", got)
	}
	if n := len(m.List("c:eth0")); n != 0 {
		t.Fatalf("failed owner holds %d addresses", n)
	}
	var st stateFile
	if _, err := m.dir.ReadJSON(stateFileName, &st); err != nil || len(st.Allocations) != 4 {
		t.Fatalf("state file holds %d allocations (%v); want 4", len(st.Allocations), err)
	}
	// An IPv4-only request still works.
	if res := mustAllocate(t, m, "d:eth0", IPv4); res.IPv6 != nil || res.IPv4.IP.String() != "10.9.0.4" {
		t.Fatalf("ipv4-only allocation: %+v", res)
	}
	// Free a v6 address: a dual-stack allocation works again.
	if _, err := m.Release(netip.MustParseAddr("fd00:9::2")); err != nil {
		t.Fatal(err)
	}
	res := mustAllocate(t, m, "e:eth0", AnyFamily)
	if res.IPv4.IP.String() != "10.9.0.5" || res.IPv6.IP.String() != "fd00:9::2" {
		t.Fatalf("got %s %s; want 10.9.0.5 fd00:9::2", res.IPv4.IP, res.IPv6.IP)
	}
}

func TestFamilyNotConfigured(t *testing.T) {
	m := newTestIPAM(t, DefaultConfig, t.TempDir())
	if _, err := m.Allocate("a:eth0", "", IPv6); !errors.Is(err, ErrFamilyNotConfigured) || !strings.Contains(err.Error(), "--pod-cidr-v6") {
		t.Fatalf("Allocate(ipv6) on an IPv4-only node = %v", err)
	}
	if _, ok := m.Router(IPv6); ok {
		t.Error("Router(ipv6) on an IPv4-only node")
	}
	if _, err := m.Allocate("a\x00", "", AnyFamily); !errors.Is(err, ErrInvalid) {
		t.Errorf("owner with a NUL byte accepted: %v", err)
	}
	if _, err := m.Allocate(strings.Repeat("x", 600), "", AnyFamily); !errors.Is(err, ErrInvalid) {
		t.Errorf("overlong owner accepted: %v", err)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	const n = 50
	dir := t.TempDir()
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"}, dir)

	var wg sync.WaitGroup
	results := make([]*Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = m.Allocate(fmt.Sprintf("c%d:eth0", i), "", AnyFamily)
		})
	}
	wg.Wait()

	seen := map[netip.Addr]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		for _, a := range []*Address{results[i].IPv4, results[i].IPv6} {
			if prev, dup := seen[a.IP]; dup {
				t.Fatalf("%s handed to both %d and %d", a.IP, prev, i)
			}
			seen[a.IP] = i
		}
	}
	if got := len(m.List("")); got != 2*n {
		t.Errorf("table holds %d rows; want %d", got, 2*n)
	}
	// The file matches the table: a fresh IPAM on the same dir sees them all.
	m2 := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"}, dir)
	if got := len(m2.List("")); got != 2*n {
		t.Errorf("state file holds %d allocations; want %d", got, 2*n)
	}
}

func TestRestoreKeepsAddressesOutsideTheCIDR(t *testing.T) {
	dir := t.TempDir()
	m := newTestIPAM(t, Config{PodCIDR: "10.9.0.0/24"}, dir)
	old := mustAllocate(t, m, "a:eth0", AnyFamily).IPv4.IP

	// Restart with another CIDR: the old allocation stays visible, is
	// releasable, and new ones come from the new range.
	m = newTestIPAM(t, Config{PodCIDR: "10.10.0.0/24"}, dir)
	rows := m.List("")
	if len(rows) != 1 || rows[0].IP != old || rows[0].Owner != "a:eth0" {
		t.Fatalf("after CIDR change: %v", ips(rows))
	}
	if res := mustAllocate(t, m, "b:eth0", AnyFamily); res.IPv4.IP.String() != "10.10.0.2" {
		t.Fatalf("new allocation %s", res.IPv4.IP)
	}
	if _, err := m.Release(old); err != nil {
		t.Fatalf("releasing the stale %s: %v", old, err)
	}
}

func TestRestoreContinuesAfterCursor(t *testing.T) {
	dir := t.TempDir()
	m := newTestIPAM(t, DefaultConfig, dir)
	a := mustAllocate(t, m, "a:eth0", AnyFamily).IPv4.IP // .2
	mustAllocate(t, m, "b:eth0", AnyFamily)              // .3
	if _, err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	m = newTestIPAM(t, DefaultConfig, dir)
	if res := mustAllocate(t, m, "c:eth0", AnyFamily); res.IPv4.IP.String() != "10.200.0.4" {
		t.Fatalf("after restart got %s; want 10.200.0.4 (the released .2 not reused at once)", res.IPv4.IP)
	}
}

func TestRestoreCorruptFileFails(t *testing.T) {
	dir := t.TempDir()
	sd, _ := statedir.Open(dir)
	if err := os.WriteFile(sd.Path(stateFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	db := statedb.New()
	tbl, _ := tables.NewIPAMTable(db)
	m, err := newIPAM(hivetest.Logger(t), db, tbl, sd, DefaultConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = m.start()
	if err == nil || !strings.Contains(err.Error(), sd.Path(stateFileName)) {
		t.Fatalf("corrupt state file: want an error naming it, got %v", err)
	}
	if _, err := m.Allocate("a:eth0", "", AnyFamily); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Allocate before a successful restore = %v; want ErrNotReady", err)
	}
}
