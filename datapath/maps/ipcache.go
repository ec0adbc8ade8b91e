package maps

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// IPCacheKey is an LPM trie key: PrefixLen counts the bits after itself,
// so it covers Family and the padding (32 bits) plus the prefix bits.
type IPCacheKey struct {
	PrefixLen uint32
	Family    uint8
	Pad       [3]uint8
	Addr      [16]byte // IPv4 in the first 4 bytes
}

// IPCacheValue is the identity behind a prefix and, for a local
// endpoint's address, the ifindex of its host-side veth (0 otherwise):
// where eBPF host routing hands packets for it.
type IPCacheValue struct {
	Identity uint32
	IfIndex  uint32
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
	a := Addr(k.Family, k.Addr)
	if !a.IsValid() {
		return netip.Prefix{}, fmt.Errorf("ipcache key: unknown family %d", k.Family)
	}
	return a.Prefix(int(k.PrefixLen) - 32)
}

// IPCacheSpec is the spec of the ipcache map.
func IPCacheSpec() *ebpf.MapSpec { return mustSpec(IPCacheMapName) }
