package e2e

import (
	"net"
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
)

// Datagrams larger than the MTU leave the sender in fragments, and only
// the first carries the L4 header: the datapath judges the later ones by
// their first (bpf/membrane.c, mb_fragments). Real pods on the default
// 1,500-byte MTU, both families, both attachment modes.
func TestFragmentsTCX(t *testing.T) { testFragments(t, "tcx") }
func TestFragmentsTC(t *testing.T)  { testFragments(t, "tc") }

func testFragments(t *testing.T, mode string) {
	e := setupPolicyEnv(t, mode, true)
	startServer(t, e.web, "5000", "5001")
	e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
	  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
	              "toPorts":[{"ports":[{"port":"5000","protocol":"UDP"}]}]},
	             {"fromEndpoints":[{"matchLabels":{"app":"client"}}],
	              "icmps":[{"fields":[{"type":8,"family":"IPv4"},{"type":128,"family":"IPv6"}]}]}]}]`)
	webEP := e.a.endpoint(e.web.Attachment()).ID
	for _, v6 := range []bool{false, true} {
		e.v6 = v6
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		t.Run(family, func(t *testing.T) {
			e.t = t
			web := e.ip(e.web)
			e.expect(
				udpSizeFact("client->web:5000, 100 bytes", e.client, web, "5000", 100, true),
				udpSizeFact("client->web:5000, 4000 bytes (fragmented both ways)", e.client, web, "5000", 4000, true),
				udpSizeFact("client->web:5000, 30000 bytes", e.client, web, "5000", 30000, true),
				udpSizeFact("other->web:5000, 4000 bytes (other identity)", e.other, web, "5000", 4000, false),
				pingSizeFact("client->web, 4000 bytes (ICMP allowed)", e.client, web, 4000, true),
				pingSizeFact("other->web, 4000 bytes", e.other, web, 4000, false),
			)
			// A large datagram to a port the rule does not allow: its first
			// fragment is policy-denied, the rest have no first to follow.
			denied := e.a.metric(webEP, maps.DirIngress, maps.ReasonDropPolicy)
			noFirst := e.a.metric(webEP, maps.DirIngress, maps.ReasonDropFragNoFirst)
			e.expect(udpSizeFact("client->web:5001, 4000 bytes (port not allowed)", e.client, web, "5001", 4000, false))
			if n := e.a.metric(webEP, maps.DirIngress, maps.ReasonDropPolicy); n <= denied {
				t.Errorf("policy-denied on web's ingress %d before, %d after a denied large datagram", denied, n)
			}
			if n := e.a.metric(webEP, maps.DirIngress, maps.ReasonDropFragNoFirst); n <= noFirst {
				t.Errorf("fragment-no-first on web's ingress %d before, %d after a denied large datagram", noFirst, n)
			}
		})
	}
}

func udpSizeFact(what string, from *pod, ip, port string, size int, want bool) fact {
	return fact{what: "UDP " + what, want: want,
		got: func() bool { return from.netns().CanUDPSize(net.JoinHostPort(ip, port), size) }}
}

func pingSizeFact(what string, from *pod, ip string, size int, want bool) fact {
	return fact{what: "ICMP " + what, want: want, got: func() bool { return from.netns().CanPingSize(ip, size) }}
}

// metric reads a counter of the pinned metrics map, summed over CPUs (0
// if it was never counted).
func (a *agent) metric(ep uint16, dir, reason uint8) uint64 {
	a.t.Helper()
	m, err := maps.OpenPinned(a.BPFRoot, maps.MetricsMapName)
	if err != nil {
		a.t.Fatal(err)
	}
	defer m.Close()
	var vals []maps.MetricsValue
	if err := m.Lookup(maps.MetricsKey{EndpointID: ep, Dir: dir, Reason: reason}, &vals); err != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}
