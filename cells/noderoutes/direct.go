package noderoutes

import (
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/statedb/tables"
)

// RouteProtocol marks the routes this cell installs (rtm_protocol; the
// kernel's own use 0-4, routing daemons 8-192), so that pruning and an
// operator (`ip route show proto 211`) tell them from every other route.
const RouteProtocol netlink.RouteProtocol = 211

// DirectRouting reaches another node's pods through a route to each of
// its pod CIDRs via its InternalIP of the same family: the nodes must
// share an L2 segment (the next hop is on-link), and the packets keep
// their pod source and destination addresses.
type DirectRouting struct{}

// route is one route: a pod CIDR via a node address.
type route struct {
	dst netip.Prefix
	gw  netip.Addr
}

// routesOf are the routes a row asks for: none for this node, a refused
// node or one without pod CIDRs.
func routesOf(n *tables.Node) ([]route, error) {
	if !n.Routed() {
		return nil, nil
	}
	var out []route
	for _, p := range n.PodCIDRs {
		var gw netip.Addr
		for _, ip := range n.InternalIPs {
			if ip.Is4() == p.Addr().Is4() {
				gw = ip
				break
			}
		}
		if !gw.IsValid() {
			return out, fmt.Errorf("node %s: no InternalIP of the family of its pod CIDR %s: not routed (add one to its CiliumNode's spec.addresses)", n.Name, p)
		}
		out = append(out, route{p, gw})
	}
	return out, nil
}

func (r route) netlink() *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), r.dst.Addr().BitLen())},
		Gw:       r.gw.AsSlice(),
		Protocol: RouteProtocol,
		Table:    syscall.RT_TABLE_MAIN,
	}
}

// installed lists the routes of our protocol in the main table.
func installed() ([]route, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Protocol: RouteProtocol, Table: syscall.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("listing routes of protocol %d: %w", RouteProtocol, err)
	}
	var out []route
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		dst, ok1 := netip.AddrFromSlice(r.Dst.IP)
		gw, ok2 := netip.AddrFromSlice(r.Gw)
		ones, _ := r.Dst.Mask.Size()
		if ok1 && ok2 {
			out = append(out, route{netip.PrefixFrom(dst.Unmap(), ones), gw.Unmap()})
		}
	}
	return out, nil
}

// Update installs the node's routes and removes the ones of ours through
// its addresses it no longer asks for (a pod CIDR that changed, a node
// now refused).
func (DirectRouting) Update(n *tables.Node) error {
	want, err := routesOf(n)
	var errs []error
	errs = append(errs, err)
	for _, r := range want {
		if isLocal(r.gw) {
			// Two agents on one host announcing one address: a route
			// via our own address would loop.
			errs = append(errs, fmt.Errorf("node %s: its InternalIP %s is an address of this node: not routed", n.Name, r.gw))
			continue
		}
		if err := netlink.RouteReplace(r.netlink()); err != nil {
			errs = append(errs, fmt.Errorf("route to node %s's pods %s via %s: %w (direct routing needs the nodes on one L2 segment: is %s on a local link?)",
				n.Name, r.dst, r.gw, err, r.gw))
		}
	}
	errs = append(errs, removeStale(func(r route) bool { return slices.Contains(n.Addresses(), r.gw) }, want))
	return errors.Join(errs...)
}

// Delete removes the routes of ours through the node's addresses.
func (DirectRouting) Delete(n *tables.Node) error {
	return removeStale(func(r route) bool { return slices.Contains(n.Addresses(), r.gw) }, nil)
}

// Prune removes every route of ours no row asks for.
func (DirectRouting) Prune(nodes iter.Seq[*tables.Node]) error {
	var want []route
	for n := range nodes {
		rs, _ := routesOf(n)
		want = append(want, rs...)
	}
	return removeStale(func(route) bool { return true }, want)
}

// removeStale deletes the installed routes of ours that match and are
// not wanted.
func removeStale(match func(route) bool, want []route) error {
	have, err := installed()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		if !match(r) || slices.Contains(want, r) {
			continue
		}
		if err := netlink.RouteDel(r.netlink()); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route to %s via %s: %w", r.dst, r.gw, err))
		}
	}
	return errors.Join(errs...)
}

// isLocal reports whether ip is an address of this network namespace.
func isLocal(ip netip.Addr) bool {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip {
			return true
		}
	}
	return false
}
