package maps

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Names of the other pinned maps.
const (
	PolicyMapName    = "mb_policy"
	ConntrackMapName = "mb_conntrack"
	MetricsMapName   = "mb_metrics"
	EventsMapName    = "mb_events"
)

// Endpoint flags telling the programs which directions are enforced.
const (
	EndpointFlagIngressEnforced = 1 << 2
	EndpointFlagEgressEnforced  = 1 << 3
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
	case proto == 0:
		base.Protocol = 0
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
	dir := "ingress"
	if k.Direction == 1 {
		dir = "egress"
	}
	proto, port := "any", "any"
	if k.PrefixLen >= PolicyPrefixProto {
		proto = fmt.Sprint(k.Protocol)
	}
	if k.PrefixLen > PolicyPrefixPort {
		plen := k.PrefixLen - PolicyPrefixPort
		lo := k.Port()
		hi := lo | uint16(1<<(16-plen)-1)
		if plen == 16 {
			port = fmt.Sprint(lo)
		} else {
			port = fmt.Sprintf("%d-%d", lo, hi)
		}
	} else if k.PrefixLen == PolicyPrefixPort {
		port = "any"
	}
	return fmt.Sprintf("endpoint=%d %s identity=%d proto=%s port=%s", k.EndpointID, dir, k.Identity, proto, port)
}

// ConntrackKey is a flow as seen at one enforcement point.
type ConntrackKey struct {
	SAddr    [16]byte
	DAddr    [16]byte
	SPort    [2]byte
	DPort    [2]byte
	Protocol uint8
	Family   uint8
	Dir      uint8
	Pad      uint8
}

// ConntrackValue is a tracked flow.
type ConntrackValue struct {
	LastSeen   uint64 // ns since boot
	EndpointID uint16
	Flags      uint16
	Pad        uint32
}

// MetricsKey counts by endpoint, direction and reason.
type MetricsKey struct {
	EndpointID uint16
	Dir        uint8
	Reason     uint8
}

// MetricsValue is one CPU's count.
type MetricsValue struct {
	Packets uint64
	Bytes   uint64
}

// Event is a record of the events ring buffer.
type Event struct {
	Timestamp   uint64
	IfIndex     uint32
	EndpointID  uint16
	Dir         uint8
	Reason      uint8
	SrcIdentity uint32
	DstIdentity uint32
	SAddr       [16]byte
	DAddr       [16]byte
	SPort       [2]byte
	DPort       [2]byte
	Protocol    uint8
	Family      uint8
	Type        uint8
	Pad         uint8
}

// Event types.
const (
	EventDrop    = 1
	EventVerdict = 2
)

// Reasons (bpf/membrane.c enum reason).
const (
	ReasonForwardedPolicy     = 1
	ReasonForwardedCT         = 2
	ReasonForwardedUnenforced = 3
	ReasonForwardedNotIP      = 4
	ReasonDropPolicy          = 10
	ReasonDropPolicyDeny      = 11
	ReasonDropSpoofed         = 12
	ReasonDropNoEndpoint      = 13
	ReasonDropMalformed       = 14
	// ReasonEventLost is not a verdict: its counter counts the monitor
	// events that found the ring buffer full.
	ReasonEventLost = 30
)

// ReasonName names a reason for operators.
func ReasonName(r uint8) string {
	switch r {
	case ReasonForwardedPolicy:
		return "allowed-by-policy"
	case ReasonForwardedCT:
		return "established"
	case ReasonForwardedUnenforced:
		return "policy-not-enforced"
	case ReasonForwardedNotIP:
		return "not-ip"
	case ReasonDropPolicy:
		return "policy-denied"
	case ReasonDropPolicyDeny:
		return "policy-deny-rule"
	case ReasonDropSpoofed:
		return "spoofed-source"
	case ReasonDropNoEndpoint:
		return "no-endpoint"
	case ReasonDropMalformed:
		return "malformed"
	case ReasonEventLost:
		return "monitor-event-lost"
	}
	return fmt.Sprintf("reason-%d", r)
}

// IsDrop reports whether a reason drops the packet.
func IsDrop(r uint8) bool { return r >= ReasonDropPolicy && r < ReasonEventLost }
