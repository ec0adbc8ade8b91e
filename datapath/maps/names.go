package maps

import (
	"fmt"
	"strconv"
	"strings"
)

// What the numbers in keys, counters and events stand for, and the names
// operators see for them: one table for the agent, the CLI and the
// monitor.

// AnyName is how a wildcard is shown: ProtoAny in a policy key, identity
// 0, all ports.
const AnyName = "any"

// Directions, seen from the endpoint, as the datapath numbers them
// (DIR_INGRESS and DIR_EGRESS in bpf/maps.h).
const (
	DirIngress uint8 = 0 // into the endpoint (to-container program)
	DirEgress  uint8 = 1 // out of the endpoint (from-container program)
)

var directionNames = [...]string{DirIngress: "ingress", DirEgress: "egress"}

// DirectionName names a direction: "ingress", "egress", or "direction-N"
// for a number the datapath does not use.
func DirectionName(d uint8) string {
	if int(d) < len(directionNames) {
		return directionNames[d]
	}
	return "direction-" + strconv.Itoa(int(d))
}

// ParseDirection reads a direction's name, case-insensitively.
func ParseDirection(s string) (uint8, bool) {
	for d, name := range directionNames {
		if strings.EqualFold(s, name) {
			return uint8(d), true
		}
	}
	return 0, false
}

// IP protocol numbers in keys, conntrack entries and events. ProtoAny
// is a policy entry's "every protocol"; no packet carries it.
const (
	ProtoAny    uint8 = 0
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// protocols are the protocols the datapath parses, in the order operators
// are told about them, with their canonical spelling.
var protocols = [...]struct {
	number uint8
	name   string
}{
	{ProtoTCP, "TCP"},
	{ProtoUDP, "UDP"},
	{ProtoSCTP, "SCTP"},
	{ProtoICMP, "ICMP"},
	{ProtoICMPv6, "ICMPv6"},
}

// ProtocolName names an IP protocol number: TCP, UDP, SCTP, ICMP, ICMPv6,
// or the number in decimal for any other (ProtoAny included: a packet's
// protocol 0 is not a wildcard; policy keys show AnyName instead).
func ProtocolName(p uint8) string {
	for _, e := range protocols {
		if e.number == p {
			return e.name
		}
	}
	return strconv.Itoa(int(p))
}

// ProtocolNames are the names ProtocolName gives, in the order operators
// are told about them: TCP, UDP, SCTP, ICMP, ICMPv6.
func ProtocolNames() []string {
	names := make([]string, len(protocols))
	for i, e := range protocols {
		names[i] = e.name
	}
	return names
}

// ProtocolByName reads one of ProtocolNames, case-insensitively ("icmpv6"
// is ICMPv6). Numbers and AnyName are not names of a protocol.
func ProtocolByName(s string) (uint8, bool) {
	for _, e := range protocols {
		if strings.EqualFold(s, e.name) {
			return e.number, true
		}
	}
	return 0, false
}

// ParseProtocol reads the protocol of a packet: one of ProtocolNames
// (case-insensitively) or a protocol number 1-255. Not AnyName: a packet
// has one protocol.
func ParseProtocol(s string) (uint8, bool) {
	if p, ok := ProtocolByName(s); ok {
		return p, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint8(n), true
}

// Reasons (bpf/membrane.c enum reason): why a packet was forwarded or
// dropped, in counters and events.
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
	ReasonDropFragNoFirst     = 15
	ReasonDropFragTooShort    = 16
	ReasonDropIPv6ExtHeaders  = 17
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
	case ReasonDropFragNoFirst:
		return "fragment-no-first"
	case ReasonDropFragTooShort:
		return "fragment-too-short"
	case ReasonDropIPv6ExtHeaders:
		return "ipv6-ext-headers"
	case ReasonEventLost:
		return "monitor-event-lost"
	}
	return fmt.Sprintf("reason-%d", r)
}

// IsDrop reports whether a reason drops the packet.
func IsDrop(r uint8) bool { return r >= ReasonDropPolicy && r < ReasonEventLost }
