package maps

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Policy LPM key layout: 64 static bits (endpoint, direction, padding,
// identity), then protocol (8), padding (8) and the port (16, network
// order).
const (
	PolicyPrefixStatic = 64
	PolicyPrefixProto  = 72
	PolicyPrefixPort   = 80 // + significant port bits
	PolicyPrefixFull   = 96
)

// PolicyKey is a key of the policy map.
type PolicyKey struct {
	PrefixLen  uint32
	EndpointID uint16
	Direction  uint8
	Pad0       uint8
	Identity   uint32
	Protocol   uint8
	Pad1       uint8
	DPort      [2]byte // network order
}

// Port returns the key's port.
func (k PolicyKey) Port() uint16 { return binary.BigEndian.Uint16(k.DPort[:]) }

// Ports returns the destination ports (ICMP types) the key matches, the
// range [lo, hi] its prefix length leaves: 0-65535 when it ends before the
// port.
func (k PolicyKey) Ports() (lo, hi uint16) {
	if k.PrefixLen <= PolicyPrefixPort {
		return 0, 0xffff
	}
	mask := uint16(1<<(16-min(k.PrefixLen-PolicyPrefixPort, 16)) - 1)
	lo = k.Port() &^ mask
	return lo, lo | mask
}

// PolicyValue says what a matching packet gets.
type PolicyValue struct {
	Flags uint32
	Pad   uint32
}

// PolicyFlagDeny marks a deny entry.
const PolicyFlagDeny = 1

// PolicyKeys expands an entry matching [port, endPort] of protocol for
// identity into LPM keys: one key for any protocol or all ports, else the
// minimal set of port prefixes covering the range.
func PolicyKeys(ep uint16, dir uint8, identity uint32, proto uint8, port, endPort uint16) []PolicyKey {
	base := PolicyKey{EndpointID: ep, Direction: dir, Identity: identity, Protocol: proto}
	switch {
	case proto == ProtoAny:
		base.PrefixLen = PolicyPrefixStatic
		return []PolicyKey{base}
	case port == 0 && endPort == 0:
		base.PrefixLen = PolicyPrefixProto
		return []PolicyKey{base}
	}
	if endPort < port {
		endPort = port
	}
	var out []PolicyKey
	for lo := uint32(port); lo <= uint32(endPort); {
		// The largest aligned block starting at lo that fits in the range.
		size := uint32(1) << bits.TrailingZeros32(lo|1<<16)
		for lo+size-1 > uint32(endPort) {
			size >>= 1
		}
		k := base
		k.PrefixLen = PolicyPrefixPort + uint32(16-bits.TrailingZeros32(size))
		binary.BigEndian.PutUint16(k.DPort[:], uint16(lo))
		out = append(out, k)
		lo += size
	}
	return out
}

// String renders a key for operators.
func (k PolicyKey) String() string {
	dir := DirectionName(DirIngress)
	if k.Direction == DirEgress {
		dir = DirectionName(DirEgress)
	}
	proto, port := AnyName, AnyName
	if k.PrefixLen >= PolicyPrefixProto {
		proto = fmt.Sprint(k.Protocol)
	}
	if k.PrefixLen > PolicyPrefixPort {
		lo, hi := k.Ports()
		if lo == hi {
			port = fmt.Sprint(lo)
		} else {
			port = fmt.Sprintf("%d-%d", lo, hi)
		}
	}
	return fmt.Sprintf("endpoint=%d %s identity=%d proto=%s port=%s", k.EndpointID, dir, k.Identity, proto, port)
}
