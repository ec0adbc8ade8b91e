package maps

import (
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// EndpointKey is the host-side interface index of an endpoint's veth.
type EndpointKey struct {
	IfIndex uint32
}

// EndpointValue is what the programs on that interface need.
type EndpointValue struct {
	EndpointID uint16
	Flags      uint16
	Identity   uint32
	IPv4       [4]byte
	IPv6       [16]byte
	MAC        [6]byte
	HostMAC    [6]byte
}

// Endpoint flags: which addresses the endpoint has, and which directions
// the programs enforce.
const (
	EndpointFlagHasIPv4         = 1 << 0
	EndpointFlagHasIPv6         = 1 << 1
	EndpointFlagIngressEnforced = 1 << 2
	EndpointFlagEgressEnforced  = 1 << 3
)

// NewEndpointValue fills a value; mac and hostMAC may be empty.
func NewEndpointValue(id uint16, identity uint32, v4, v6 netip.Addr, mac, hostMAC string) EndpointValue {
	v := EndpointValue{EndpointID: id, Identity: identity}
	if v4.IsValid() {
		v.Flags |= EndpointFlagHasIPv4
		v.IPv4 = v4.As4()
	}
	if v6.IsValid() {
		v.Flags |= EndpointFlagHasIPv6
		v.IPv6 = v6.As16()
	}
	if hw, err := net.ParseMAC(mac); err == nil && len(hw) == 6 {
		copy(v.MAC[:], hw)
	}
	if hw, err := net.ParseMAC(hostMAC); err == nil && len(hw) == 6 {
		copy(v.HostMAC[:], hw)
	}
	return v
}

// Addrs returns the endpoint's addresses as netip.
func (v EndpointValue) Addrs() (v4, v6 netip.Addr) {
	if v.Flags&EndpointFlagHasIPv4 != 0 {
		v4 = netip.AddrFrom4(v.IPv4)
	}
	if v.Flags&EndpointFlagHasIPv6 != 0 {
		v6 = netip.AddrFrom16(v.IPv6)
	}
	return
}

// EndpointsSpec is the spec of the endpoints map.
func EndpointsSpec() *ebpf.MapSpec { return mustSpec(EndpointsMapName) }
