package maps

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProtocolTable(t *testing.T) {
	for p, want := range map[uint8]int{ProtoICMP: unix.IPPROTO_ICMP, ProtoTCP: unix.IPPROTO_TCP, ProtoUDP: unix.IPPROTO_UDP,
		ProtoICMPv6: unix.IPPROTO_ICMPV6, ProtoSCTP: unix.IPPROTO_SCTP} {
		if int(p) != want {
			t.Errorf("protocol %s is %d, the kernel's %d", ProtocolName(p), p, want)
		}
	}
	if got := ProtocolNames(); !slices.Equal(got, []string{"TCP", "UDP", "SCTP", "ICMP", "ICMPv6"}) {
		t.Errorf("ProtocolNames() = %q", got)
	}
	for _, name := range ProtocolNames() {
		for _, s := range []string{name, toggleCase(name)} {
			if p, ok := ProtocolByName(s); !ok || ProtocolName(p) != name {
				t.Errorf("ProtocolByName(%q) = %d, %v; want %s", s, p, ok, name)
			}
		}
	}
	for s, want := range map[string]uint8{"tcp": ProtoTCP, "Icmpv6": ProtoICMPv6, "6": ProtoTCP, "47": 47, "255": 255} {
		if p, ok := ParseProtocol(s); !ok || p != want {
			t.Errorf("ParseProtocol(%q) = %d, %v; want %d", s, p, ok, want)
		}
	}
	for _, s := range []string{"", "any", "ANY", "0", "256", "-1", "GRE"} {
		if p, ok := ParseProtocol(s); ok {
			t.Errorf("ParseProtocol(%q) = %d, want no protocol", s, p)
		}
	}
	for _, s := range []string{"6", " TCP", "any"} {
		if p, ok := ProtocolByName(s); ok {
			t.Errorf("ProtocolByName(%q) = %d: it takes names only, as they are", s, p)
		}
	}
	for p, want := range map[uint8]string{ProtoAny: "0", 47: "47", ProtoICMPv6: "ICMPv6"} {
		if got := ProtocolName(p); got != want {
			t.Errorf("ProtocolName(%d) = %q, want %q", p, got, want)
		}
	}
}

func TestDirectionTable(t *testing.T) {
	for d, want := range map[uint8]string{DirIngress: "ingress", DirEgress: "egress", 2: "direction-2", 255: "direction-255"} {
		if got := DirectionName(d); got != want {
			t.Errorf("DirectionName(%d) = %q, want %q", d, got, want)
		}
	}
	for s, want := range map[string]uint8{"ingress": DirIngress, "Egress": DirEgress} {
		if d, ok := ParseDirection(s); !ok || d != want {
			t.Errorf("ParseDirection(%q) = %d, %v", s, d, ok)
		}
	}
	if _, ok := ParseDirection("direction-2"); ok {
		t.Error("ParseDirection took a number's fallback name")
	}
}

func toggleCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}

// Operators see reasons by name in `membrane bpf metrics` and the monitor:
// every reason the datapath counts has one, and drops are drops.
func TestReasonTable(t *testing.T) {
	for r, want := range map[uint8]string{
		ReasonForwardedPolicy: "allowed-by-policy", ReasonForwardedCT: "established",
		ReasonForwardedUnenforced: "policy-not-enforced", ReasonForwardedNotIP: "not-ip",
		ReasonDropPolicy: "policy-denied", ReasonDropPolicyDeny: "policy-deny-rule", ReasonDropSpoofed: "spoofed-source",
		ReasonDropNoEndpoint: "no-endpoint", ReasonDropMalformed: "malformed", ReasonDropFragNoFirst: "fragment-no-first",
		ReasonDropFragTooShort: "fragment-too-short", ReasonDropIPv6ExtHeaders: "ipv6-ext-headers",
		ReasonEventLost: "monitor-event-lost", 99: "reason-99",
	} {
		if got := ReasonName(r); got != want {
			t.Errorf("ReasonName(%d) = %q, want %q", r, got, want)
		}
		if drop := r >= ReasonDropPolicy && r <= ReasonDropIPv6ExtHeaders; IsDrop(r) != drop {
			t.Errorf("IsDrop(%s) = %v", want, IsDrop(r))
		}
	}
}
