package ipam

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/attachment"
	"github.com/membrane-net/membrane/statedb/tables"
)

func TestFindLeaks(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	row := func(ip, owner string) *tables.IPAMAllocation {
		return &tables.IPAMAllocation{IP: netip.MustParseAddr(ip), Owner: owner, Pod: "default/p", Created: at}
	}
	restored := []*tables.IPAMAllocation{
		row("10.0.0.2", "used:eth0"),         // an endpoint has it
		row("10.0.0.3", "gone:eth0"),         // no endpoint, no veth: leaked
		row("10.0.0.4", "midadd:eth0"),       // no endpoint, veth exists: an ADD may be between the two
		row("10.0.0.5", "retried:eth0"),      // its endpoint got another address: leaked
		row("10.0.0.6", "released:eth0"),     // released since the start
		row("10.0.0.7", "reused:eth0"),       // released and handed out again since the start
		row("10.0.0.8", "not-an-attachment"), // made by hand, no ifname
		row("fd00::3", "gone:eth0"),          // the leaked attachment's other family
	}
	current := map[netip.Addr]*tables.IPAMAllocation{}
	for _, r := range restored {
		current[r.IP] = r
	}
	delete(current, netip.MustParseAddr("10.0.0.6"))
	reused := *current[netip.MustParseAddr("10.0.0.7")]
	reused.Owner, reused.Created = "new:eth0", at.Add(time.Minute)
	current[reused.IP] = &reused

	endpoints := []*tables.Endpoint{
		{ID: 1, ContainerID: "used", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.2")},
		{ID: 2, ContainerID: "retried", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.9")},
	}
	veths := map[string]bool{
		attachment.HostVethName("midadd", "eth0"):  true,
		attachment.HostVethName("retried", "eth0"): true,
		attachment.HostVethName("used", "eth0"):    true,
	}
	leaks := findLeaks(restored,
		func(ip netip.Addr) (*tables.IPAMAllocation, bool) { a, ok := current[ip]; return a, ok },
		endpoints, func(name string) bool { return veths[name] })

	var got []string
	for _, l := range leaks {
		got = append(got, l.row.IP.String())
		if l.why == "" {
			t.Errorf("%s released without a reason", l.row.IP)
		}
	}
	if want := []string{"10.0.0.3", "10.0.0.5", "fd00::3"}; !slices.Equal(got, want) {
		t.Fatalf("leaks %v, want %v", got, want)
	}
}

// releaseLeak frees the restored allocation, and nothing if the address
// changed hands since findLeaks looked.
func TestReleaseLeak(t *testing.T) {
	dir := t.TempDir()
	m := newTestIPAM(t, Config{PodCIDR: "10.0.0.0/24"}, dir)
	mustAllocate(t, m, "a:eth0", IPv4)
	mustAllocate(t, m, "b:eth0", IPv4)
	m.stop()
	m = newTestIPAM(t, Config{PodCIDR: "10.0.0.0/24"}, dir)
	if len(m.restored) != 2 {
		t.Fatalf("restored %d allocations, want 2", len(m.restored))
	}
	a, b := m.restored[0], m.restored[1]

	if ok, err := m.releaseLeak(leak{a, "test"}); !ok || err != nil {
		t.Fatalf("releaseLeak(%s) = %v, %v", a.IP, ok, err)
	}
	if _, err := m.Release(b.IP); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Allocate("c:eth0", "", IPv4); err != nil {
		t.Fatal(err)
	}
	for _, l := range []leak{{a, "again"}, {b, "released by a DEL"}} {
		if ok, err := m.releaseLeak(l); ok || err != nil {
			t.Errorf("releaseLeak(%s) of a changed allocation = %v, %v; want false, nil", l.row.IP, ok, err)
		}
	}
	if rows := m.List(""); len(rows) != 1 || rows[0].Owner != "c:eth0" {
		t.Errorf("allocations %v, want only c:eth0's", ips(rows))
	}
}
