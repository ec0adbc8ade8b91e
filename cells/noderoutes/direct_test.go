package noderoutes

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/membrane-net/membrane/internal/testutil"
	"github.com/membrane-net/membrane/statedb/tables"
)

// inNewNetns runs f on a thread moved into a fresh network namespace with
// a veth holding 192.168.77.1/24 (the segment the nodes are on).
func inNewNetns(t *testing.T, f func()) {
	testutil.RequirePrivileged(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer netns.Set(orig)
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "seg0"}, PeerName: "seg1"}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("192.168.77.1/24")
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	f()
}

func node(name, ip string, cidrs ...string) *tables.Node {
	n := &tables.Node{Name: name, InternalIPs: []netip.Addr{netip.MustParseAddr(ip)}}
	for _, c := range cidrs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	return n
}

func routesNow(t *testing.T) []route {
	t.Helper()
	rs, err := installed()
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestDirectRouting(t *testing.T) {
	inNewNetns(t, func() {
		var dp DirectRouting
		b := node("b", "192.168.77.2", "10.2.0.0/24")
		c := node("c", "192.168.77.3", "10.3.0.0/24")
		// Not ours: a route prune must leave alone.
		foreign := &netlink.Route{Dst: route{netip.MustParsePrefix("10.9.0.0/24"), netip.Addr{}}.netlink().Dst,
			Gw: netip.MustParseAddr("192.168.77.9").AsSlice()}
		if err := netlink.RouteAdd(foreign); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*tables.Node{b, c} {
			if err := dp.Update(n); err != nil {
				t.Fatal(err)
			}
		}
		want := []route{{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParseAddr("192.168.77.2")},
			{netip.MustParsePrefix("10.3.0.0/24"), netip.MustParseAddr("192.168.77.3")}}
		if got := routesNow(t); !slices.Equal(got, want) {
			t.Fatalf("routes %v, want %v", got, want)
		}
		// b's CIDR changes: the old route goes, the new one comes.
		b2 := node("b", "192.168.77.2", "10.4.0.0/24")
		if err := dp.Update(b2); err != nil {
			t.Fatal(err)
		}
		if got := routesNow(t); len(got) != 2 || !slices.Contains(got, route{netip.MustParsePrefix("10.4.0.0/24"), netip.MustParseAddr("192.168.77.2")}) ||
			slices.Contains(got, want[0]) {
			t.Fatalf("after b moved: %v", got)
		}
		// Refused and local rows get nothing.
		c.Refused = "overlap"
		if err := dp.Update(c); err != nil {
			t.Fatal(err)
		}
		if got := routesNow(t); len(got) != 1 {
			t.Fatalf("after c refused: %v", got)
		}
		// A node on our own address is not routed.
		self := node("self", "192.168.77.1", "10.5.0.0/24")
		if err := dp.Update(self); err == nil {
			t.Fatal("a node with this node's address was routed")
		}
		// Delete, then prune with no rows: only the foreign route is left.
		if err := dp.Delete(b2); err != nil {
			t.Fatal(err)
		}
		if got := routesNow(t); len(got) != 0 {
			t.Fatalf("after delete: %v", got)
		}
		if err := dp.Update(c2(c)); err != nil {
			t.Fatal(err)
		}
		if err := dp.Prune(slices.Values([]*tables.Node{})); err != nil {
			t.Fatal(err)
		}
		if got := routesNow(t); len(got) != 0 {
			t.Fatalf("after prune: %v", got)
		}
		all, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		found := false
		for _, r := range all {
			if r.Dst != nil && r.Dst.String() == "10.9.0.0/24" {
				found = true
			}
		}
		if !found {
			t.Fatal("prune removed a route that is not ours")
		}
	})
}

// c2 is c accepted again.
func c2(c *tables.Node) *tables.Node { n := c.Clone(); n.Refused = ""; return n }
