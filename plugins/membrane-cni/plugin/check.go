package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// Check verifies that what ADD reported (the runtime passes it back as
// prevResult) still holds: the pod's interface with its addresses, routes
// and gateway neighbour, the host veth, and a ready endpoint in the agent.
func Check(ctx context.Context, args *skel.CmdArgs) error {
	inv, err := begin(args, validConf)
	if err != nil {
		return err
	}
	if err := check(ctx, inv, args.Netns); err != nil {
		return fmt.Errorf("membrane-cni CHECK for attachment %s: %w", inv.att.Owner(), err)
	}
	return nil
}

func check(ctx context.Context, inv *invocation, netnsPath string) error {
	conf, att := inv.conf, inv.att
	if conf.RawPrevResult == nil {
		return withCode(types.ErrInvalidNetworkConfig, errors.New("no prevResult: the runtime must pass the ADD result to CHECK"))
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return withCode(types.ErrDecodingFailure, fmt.Errorf("prevResult: %w", err))
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return withCode(types.ErrDecodingFailure, fmt.Errorf("prevResult: %w", err))
	}

	contIdx := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == att.IfName && intf.Sandbox == netnsPath {
			contIdx = i
		}
	}
	if contIdx < 0 {
		return fmt.Errorf("prevResult has no interface %s in sandbox %s", att.IfName, netnsPath)
	}
	var ips []*current.IPConfig
	for _, ipc := range prev.IPs {
		if ipc.Interface == nil || *ipc.Interface == contIdx {
			ips = append(ips, ipc)
		}
	}

	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return withCode(types.ErrInvalidNetNS, fmt.Errorf("opening netns %q: %w", netnsPath, err))
	}
	defer netns.Close()

	hostMAC, err := checkHostVeth(att.HostVeth())
	if err != nil {
		return err
	}
	if err := checkPod(netns, prev.Interfaces[contIdx], ips, prev.Routes, hostMAC, conf.mtu()); err != nil {
		return fmt.Errorf("in netns %s: %w", netnsPath, err)
	}
	return checkEndpoint(ctx, inv.client, att, ips)
}

// checkHostVeth verifies the host end and returns its MAC.
func checkHostVeth(name string) (net.HardwareAddr, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("host veth %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return nil, fmt.Errorf("host interface %s is a %s, not a veth", name, link.Type())
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("host veth %s is down", name)
	}
	return link.Attrs().HardwareAddr, nil
}

func checkPod(netns ns.NetNS, intf *current.Interface, ips []*current.IPConfig, routes []*types.Route, hostMAC net.HardwareAddr, mtu int) error {
	h, err := nsHandle(netns)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(intf.Name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", intf.Name, err)
	}
	la := link.Attrs()
	if intf.Mac != "" && intf.Mac != la.HardwareAddr.String() {
		return fmt.Errorf("interface %s has MAC %s, prevResult says %s", intf.Name, la.HardwareAddr, intf.Mac)
	}
	if la.MTU != mtu {
		return fmt.Errorf("interface %s has MTU %d, the configuration says %d", intf.Name, la.MTU, mtu)
	}
	if la.Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is down", intf.Name)
	}

	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", intf.Name, err)
	}
	for _, ipc := range ips {
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return ipNetEqual(a.IPNet, &ipc.Address) }) {
			return fmt.Errorf("interface %s lacks address %s", intf.Name, ipc.Address.String())
		}
	}

	rts, err := dump(func() ([]netlink.Route, error) { return h.RouteList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing routes of %s: %w", intf.Name, err)
	}
	for _, want := range routes {
		if !slices.ContainsFunc(rts, func(r netlink.Route) bool { return routeMatches(r, want) }) {
			return fmt.Errorf("route %s via %s is missing on %s", want.Dst.String(), want.GW, intf.Name)
		}
	}

	neighs, err := dump(func() ([]netlink.Neigh, error) { return h.NeighList(la.Index, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing neighbours on %s: %w", intf.Name, err)
	}
	for _, ipc := range ips {
		if ipc.Gateway == nil {
			continue
		}
		ok := slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.Equal(ipc.Gateway) && n.State&netlink.NUD_PERMANENT != 0 &&
				n.HardwareAddr.String() == hostMAC.String()
		})
		if !ok {
			return fmt.Errorf("no permanent neighbour entry %s lladdr %s on %s", ipc.Gateway, hostMAC, intf.Name)
		}
	}
	return nil
}

func ipNetEqual(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return false
	}
	ao, ab := a.Mask.Size()
	bo, bb := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo && ab == bb
}

// routeMatches compares destination and gateway; the kernel reports a
// default route with a nil or an all-zero destination depending on the
// netlink version.
func routeMatches(r netlink.Route, want *types.Route) bool {
	if want.GW != nil && !r.Gw.Equal(want.GW) {
		return false
	}
	wantOnes, wantBits := want.Dst.Mask.Size()
	if r.Dst == nil {
		isV4 := want.Dst.IP.To4() != nil
		famOK := (r.Family == netlink.FAMILY_V4) == isV4
		if r.Family == 0 && r.Gw != nil {
			famOK = (r.Gw.To4() != nil) == isV4
		}
		return wantOnes == 0 && famOK
	}
	ones, bits := r.Dst.Mask.Size()
	return ones == wantOnes && bits == wantBits && r.Dst.IP.Equal(want.Dst.IP)
}

// checkEndpoint asks the agent for the attachment's endpoint: it must exist,
// be ready and carry the addresses of the result.
func checkEndpoint(ctx context.Context, c *client.Client, att Attachment, ips []*current.IPConfig) error {
	ep, err := c.GetEndpoint(ctx, att.EndpointID())
	if notFound(err) {
		return fmt.Errorf("the agent has no endpoint for this attachment (was it deleted, or the agent's state lost?)")
	}
	if err != nil {
		return fmt.Errorf("asking the agent about the endpoint: %w", agentError(c.Socket, err))
	}
	return endpointDrift(ep, ips)
}

// endpointDrift compares the agent's endpoint with what ADD reported: it
// must be ready and carry the result's addresses.
func endpointDrift(ep *models.Endpoint, ips []*current.IPConfig) error {
	if ep.State != models.StateReady {
		return fmt.Errorf("endpoint %d is %s, not ready (see `membrane endpoint log %d`)", ep.ID, ep.State, ep.ID)
	}
	for _, ipc := range ips {
		ip := ipc.Address.IP.String()
		if ip != ep.Addressing.IPv4 && ip != ep.Addressing.IPv6 {
			return fmt.Errorf("endpoint %d has addresses %q/%q, prevResult says %s",
				ep.ID, ep.Addressing.IPv4, ep.Addressing.IPv6, ip)
		}
	}
	return nil
}
