package e2eutil

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// A CIDRPool is the IPv4 space pod CIDRs are picked from: 10.First.0.0
// to 10.Last.255.255.
type CIDRPool struct{ First, Last uint8 }

// The suites' pools, apart so that suites running at once (go test runs
// packages in parallel) pick different CIDRs.
var (
	PoolE2E        = CIDRPool{210, 249} // test/e2e and test/podman
	PoolBench      = CIDRPool{160, 199} // test/bench
	PoolContainerd = CIDRPool{120, 159} // test/containerd
	PoolPlugin     = CIDRPool{100, 119} // plugins/membrane-cni/plugin
)

var (
	cidrMu     sync.Mutex
	cidrsTaken = map[netip.Prefix]bool{}
)

// FreePodCIDR picks 10.X.Y.0/bits with X in pool that overlaps no route
// on this machine and no other CIDR of this run, so that concurrent tests
// and suites (and other engineers' runs) do not collide.
func FreePodCIDR(tb testing.TB, pool CIDRPool, bits int) netip.Prefix {
	tb.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes := listRoutes(tb, netlink.FAMILY_V4)
	for range 1000 {
		x := int(pool.First) + rand.IntN(int(pool.Last)-int(pool.First)+1)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(x), byte(rand.IntN(256)), 0}), bits).Masked()
		if !used(routes, p) {
			cidrsTaken[p] = true
			return p
		}
	}
	tb.Fatalf("no free pod CIDR in 10.%d.0.0-10.%d.255.255", pool.First, pool.Last)
	return netip.Prefix{}
}

// FreePodCIDRv6 picks fd00:2NN:XXXX::/64 that no IPv6 route on this
// machine and no other CIDR of this run overlaps.
func FreePodCIDRv6(tb testing.TB) netip.Prefix {
	tb.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes := listRoutes(tb, netlink.FAMILY_V6)
	for range 1000 {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0xfd, 0x00, 0x02, byte(0x10+rand.IntN(0x40))
		b[4], b[5] = byte(rand.IntN(256)), byte(rand.IntN(256))
		p := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if !used(routes, p) {
			cidrsTaken[p] = true
			return p
		}
	}
	tb.Fatal("no free IPv6 pod CIDR")
	return netip.Prefix{}
}

// listRoutes lists the routes of every table.
func listRoutes(tb testing.TB, family int) []netlink.Route {
	tb.Helper()
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		tb.Fatalf("listing routes: %v", err)
	}
	return routes
}

// used reports whether p overlaps a route's destination or a CIDR taken
// before. Callers hold cidrMu.
func used(routes []netlink.Route, p netip.Prefix) bool {
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip := r.Dst.IP
		if p.Addr().Is4() {
			ip = ip.To4()
		}
		rp, ok := netip.AddrFromSlice(ip)
		ones, _ := r.Dst.Mask.Size()
		if ok && ones > 0 && netip.PrefixFrom(rp, ones).Overlaps(p) {
			return true
		}
	}
	for q := range cidrsTaken {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}
