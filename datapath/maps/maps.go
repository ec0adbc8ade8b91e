// Package maps defines the layout of Membrane's pinned BPF maps: their specs,
// keys and values, shared by the agent (which creates, pins and writes them
// through the statedb reconciler), the datapath programs (which read them;
// the C structs in bpf/ mirror these) and the debug CLI (which opens the
// pins directly, so it works while the agent is down).
//
// Layouts are fixed-size, host byte order except where the field is an
// address (network order, as the packet carries it).
package maps

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/bpf"
)

// Names of the pinned maps under the bpffs directory (--bpf-root).
const (
	IPCacheMapName   = "mb_ipcache"
	EndpointsMapName = "mb_endpoints"
)

// Address families in keys.
const (
	FamilyIPv4 = 4
	FamilyIPv6 = 6
)

// IPCacheKey is an LPM trie key: PrefixLen counts the bits after itself,
// so it covers Family and the padding (32 bits) plus the prefix bits.
type IPCacheKey struct {
	PrefixLen uint32
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte // IPv4 in the first 4 bytes
}

// IPCacheValue is the identity behind a prefix.
type IPCacheValue struct {
	Identity uint32
	Flags    uint32
}

// NewIPCacheKey builds the key of a prefix.
func NewIPCacheKey(p netip.Prefix) IPCacheKey {
	p = p.Masked()
	k := IPCacheKey{PrefixLen: 32 + uint32(p.Bits())}
	a := p.Addr()
	if a.Is4() {
		k.Family = FamilyIPv4
		b := a.As4()
		copy(k.Addr[:], b[:])
	} else {
		k.Family = FamilyIPv6
		b := a.As16()
		copy(k.Addr[:], b[:])
	}
	return k
}

// Prefix turns a key back into the prefix it stands for.
func (k IPCacheKey) Prefix() (netip.Prefix, error) {
	bits := int(k.PrefixLen) - 32
	switch k.Family {
	case FamilyIPv4:
		return netip.AddrFrom4([4]byte(k.Addr[:4])).Prefix(bits)
	case FamilyIPv6:
		return netip.AddrFrom16(k.Addr).Prefix(bits)
	}
	return netip.Prefix{}, fmt.Errorf("ipcache key: unknown family %d", k.Family)
}

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

// Endpoint flags.
const (
	EndpointFlagHasIPv4 = 1 << 0
	EndpointFlagHasIPv6 = 1 << 1
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

// Spec returns the spec of a map as compiled into the datapath object
// (bpf/maps.h is the single definition; pinned by name under --bpf-root).
func Spec(name string) (*ebpf.MapSpec, error) {
	spec, err := objectSpec()
	if err != nil {
		return nil, err
	}
	m, ok := spec.Maps[name]
	if !ok {
		return nil, fmt.Errorf("map %s is not in the datapath object", name)
	}
	return m.Copy(), nil
}

var objectSpec = sync.OnceValues(bpf.Spec)

// IPCacheSpec and EndpointsSpec are the specs of those two maps.
func IPCacheSpec() *ebpf.MapSpec   { return mustSpec(IPCacheMapName) }
func EndpointsSpec() *ebpf.MapSpec { return mustSpec(EndpointsMapName) }

func mustSpec(name string) *ebpf.MapSpec {
	m, err := Spec(name)
	if err != nil {
		panic(err) // the object is embedded: this is a build defect
	}
	return m
}

// OpenPinned opens a map another process pinned under root, read-only.
func OpenPinned(root, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(root, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w (is the agent running with --bpf-root=%s?)",
			filepath.Join(root, name), err, root)
	}
	return m, nil
}
