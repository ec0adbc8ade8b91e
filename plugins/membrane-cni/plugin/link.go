package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The host side of an attachment is configured with the package-level
// netlink functions, i.e. in the network namespace of the calling thread
// (the runtime's, normally the host's). The pod side goes through a
// netlink handle opened in the pod's namespace, so no goroutine ever
// switches namespaces.

// podAddr is one of the pod's addresses and its router.
type podAddr struct {
	IP     netip.Addr
	Router netip.Addr
}

func (a podAddr) bits() int { return a.IP.BitLen() }

func (a podAddr) ipNet() *net.IPNet { return hostNet(a.IP) }

// defaultNet is the destination of the default route in the address's
// family: 0.0.0.0/0 or ::/0.
func (a podAddr) defaultNet() *net.IPNet {
	return &net.IPNet{IP: make(net.IP, a.bits()/8), Mask: net.CIDRMask(0, a.bits())}
}

func (a podAddr) family() int {
	if a.IP.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// hostNet is addr as a single-address net.IPNet (/32 or /128).
func hostNet(addr netip.Addr) *net.IPNet {
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}
}

// permanentNeigh is the permanent neighbour entry ip lladdr mac on a link:
// each end of the veth has one for the other's address, so neither has to
// ARP (solicit) for it.
func permanentNeigh(linkIndex, family int, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: linkIndex, Family: family, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
}

// addrFlags are the flags of an address we add: no duplicate address
// detection for IPv6 (the address is ours alone; DAD would delay it by
// seconds).
func addrFlags(a netip.Addr) int {
	if a.Is6() {
		return unix.IFA_F_NODAD
	}
	return 0
}

// vethPair is what ADD created.
type vethPair struct {
	HostName  string
	HostIndex int
	HostMAC   net.HardwareAddr
	ContName  string
	ContIndex int
	ContMAC   net.HardwareAddr
}

// ErrHostVethExists means the attachment's host veth is already there: the
// attachment was set up before and not deleted.
var ErrHostVethExists = errors.New("host veth already exists")

// createVeth makes the veth pair with the peer created directly inside the
// pod's namespace under its final name: nothing is ever left half-moved.
func createVeth(hostName, contName string, mtu int, netns ns.NetNS) (*vethPair, error) {
	if _, err := netlink.LinkByName(hostName); err == nil {
		return nil, fmt.Errorf("%s: %w", hostName, ErrHostVethExists)
	}
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	la.MTU = mtu
	veth := netlink.NewVeth(la)
	veth.PeerName = contName
	veth.PeerNamespace = netlink.NsFd(int(netns.Fd()))
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if _, lerr := netlink.LinkByName(hostName); lerr == nil {
				return nil, fmt.Errorf("%s: %w", hostName, ErrHostVethExists)
			}
			return nil, fmt.Errorf("interface %s already exists in the pod's netns: %w", contName, err)
		}
		return nil, fmt.Errorf("creating veth pair %s/%s: %w", hostName, contName, err)
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		// Nothing to undo that we could find; the caller's rollback tries anyway.
		return nil, fmt.Errorf("looking up new veth %s: %w", hostName, err)
	}
	p := &vethPair{
		HostName:  hostName,
		HostIndex: host.Attrs().Index,
		HostMAC:   host.Attrs().HardwareAddr,
		ContName:  contName,
	}
	return p, nil
}

// nsHandle opens a netlink handle inside netns.
func nsHandle(netns ns.NetNS) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(vns.NsHandle(int(netns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("netlink in netns %s: %w", netns.Path(), err)
	}
	return h, nil
}

// configurePod sets up the pod's end: link up, the addresses as /32 (/128),
// a link-scope route to the router then the default route via it, and a
// permanent neighbour entry router -> host veth MAC so the pod never has to
// ARP for its gateway.
func configurePod(netns ns.NetNS, p *vethPair, addrs []podAddr) error {
	h, err := nsHandle(netns)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(p.ContName)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", p.ContName, err)
	}
	p.ContIndex = link.Attrs().Index
	p.ContMAC = link.Attrs().HardwareAddr
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", p.ContName, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: a.ipNet(), Flags: addrFlags(a.IP)}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("adding address %s to %s: %w", a.IP, p.ContName, err)
		}
		toRouter := &netlink.Route{
			LinkIndex: p.ContIndex,
			Dst:       hostNet(a.Router),
			Scope:     netlink.SCOPE_LINK,
			Src:       a.IP.AsSlice(),
		}
		if err := h.RouteAdd(toRouter); err != nil {
			return fmt.Errorf("adding route %s dev %s: %w", toRouter.Dst, p.ContName, err)
		}
		def := &netlink.Route{
			LinkIndex: p.ContIndex,
			Dst:       a.defaultNet(),
			Gw:        a.Router.AsSlice(),
			Src:       a.IP.AsSlice(),
		}
		if err := h.RouteAdd(def); err != nil {
			return fmt.Errorf("adding default route via %s dev %s: %w", a.Router, p.ContName, err)
		}
		if err := h.NeighSet(permanentNeigh(p.ContIndex, a.family(), a.Router, p.HostMAC)); err != nil {
			return fmt.Errorf("adding neighbour %s lladdr %s dev %s: %w", a.Router, p.HostMAC, p.ContName, err)
		}
	}
	return nil
}

// configureHost sets up the host's end: link up, an alias naming the
// attachment (for `ip link`), the router address as /32 (/128) so the pod
// can reach its gateway, a host route to each pod address and a permanent
// neighbour entry pod address -> pod MAC. The entry spares the first
// packet to a pod an ARP/ND round, and for IPv6 a wait of a second or two:
// the host veth's link-local address is still in duplicate address
// detection right after creation, and the kernel cannot solicit until it
// is done. DAD is off on the host veth for the same reason.
func configureHost(p *vethPair, owner string, addrs []podAddr) error {
	link, err := netlink.LinkByIndex(p.HostIndex)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", p.HostName, err)
	}
	if err := netlink.LinkSetAlias(link, "membrane-cni "+owner); err != nil {
		return fmt.Errorf("setting alias of %s: %w", p.HostName, err)
	}
	for _, a := range addrs {
		if a.IP.Is6() {
			k := "net.ipv6.conf." + p.HostName + ".accept_dad"
			if _, err := sysctl.Sysctl(k, "0"); err != nil {
				return fmt.Errorf("setting %s=0: %w", k, err)
			}
			break
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", p.HostName, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: hostNet(a.Router), Flags: addrFlags(a.Router)}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding router address %s to %s: %w", a.Router, p.HostName, err)
		}
		r := &netlink.Route{LinkIndex: p.HostIndex, Dst: a.ipNet(), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("adding host route %s dev %s: another interface already routes this address (a stale attachment or another network using the same pod CIDR?): %w",
					r.Dst, p.HostName, err)
			}
			return fmt.Errorf("adding host route %s dev %s: %w", r.Dst, p.HostName, err)
		}
		if err := netlink.NeighSet(permanentNeigh(p.HostIndex, a.family(), a.IP, p.ContMAC)); err != nil {
			return fmt.Errorf("adding neighbour %s lladdr %s dev %s: %w", a.IP, p.ContMAC, p.HostName, err)
		}
	}
	return nil
}

// enableForwarding turns on forwarding for the families the pod uses, both
// globally and on the host veth.
func enableForwarding(hostIf string, addrs []podAddr) error {
	var v4, v6 bool
	for _, a := range addrs {
		v4 = v4 || a.IP.Is4()
		v6 = v6 || a.IP.Is6()
	}
	var keys []string
	if v4 {
		keys = append(keys, "net.ipv4.ip_forward", "net.ipv4.conf."+hostIf+".forwarding")
	}
	if v6 {
		keys = append(keys, "net.ipv6.conf.all.forwarding", "net.ipv6.conf."+hostIf+".forwarding")
	}
	for _, k := range keys {
		if v, err := sysctl.Sysctl(k); err == nil && v == "1" {
			continue
		}
		if _, err := sysctl.Sysctl(k, "1"); err != nil {
			return fmt.Errorf("setting %s=1: %w", k, err)
		}
	}
	return nil
}

// deleteLink removes the named link from the calling thread's namespace; a
// link that is not there is not an error. Deleting one end of a veth pair
// removes the other.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// dump retries a netlink dump the kernel interrupted (netlink >= 1.2
// reports ErrDumpInterrupted when the table changed mid-dump).
func dump[T any](f func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return v, err
	}
}
