package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
)

// Fragmented datagrams and IPv6 extension headers: later fragments carry
// no L4 header and are judged by what their first fragment said; the
// L4 header behind IPv6 extension headers is the one policy sees.

const (
	ipv4MF = 0x2000

	nhHop      = 0
	nhRouting  = 43
	nhFragment = 44
	nhDest     = 60
)

// frag4 is an IPv4 fragment of datagram id at offset (in 8-byte units)
// carrying payload, with more-fragments set if more.
func frag4(src, dst netip.Addr, proto uint8, id uint16, offset uint16, more bool, payload []byte) []byte {
	pkt := ipv4(src, dst, proto, payload)
	ip := pkt[14:]
	binary.BigEndian.PutUint16(ip[4:], id)
	fo := offset
	if more {
		fo |= ipv4MF
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	return pkt
}

// udpFirst is a UDP header and some payload: a first fragment's data.
func udpFirst(sport, dport uint16) []byte { return append(udp(sport, dport), make([]byte, 64)...) }

// ext is an IPv6 extension header of type typ, 8 bytes long; its next
// header field is filled in by ipv6ext.
func ext(typ uint8) [2][]byte { return [2][]byte{{typ}, make([]byte, 8)} }

// fragHdr is an IPv6 fragment header of datagram id at offset (8-byte
// units).
func fragHdr(id uint32, offset uint16, more bool) [2][]byte {
	b := make([]byte, 8)
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return [2][]byte{{nhFragment}, b}
}

// ipv6ext is an IPv6 packet with the extension headers exts in order,
// then proto's payload.
func ipv6ext(src, dst netip.Addr, proto uint8, payload []byte, exts ...[2][]byte) []byte {
	var body []byte
	for i, e := range exts {
		h := append([]byte{}, e[1]...)
		h[0] = proto
		if i+1 < len(exts) {
			h[0] = exts[i+1][0][0]
		}
		body = append(body, h...)
	}
	first := proto
	if len(exts) > 0 {
		first = exts[0][0][0]
	}
	return ipv6(src, dst, first, append(body, payload...))
}

func TestIPv4FragmentsFollowTheirFirst(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	later := func(id uint16) []byte { return frag4(webIP, podIP, 17, id, 185, false, make([]byte, 100)) }

	// Allowed port: the first and the later fragment pass.
	if got := d.run(d.to, frag4(webIP, podIP, 17, 1, 0, true, udpFirst(1000, 5000))); got != tcOK {
		t.Fatalf("first fragment to the allowed port: %d, want pass", got)
	}
	if got := d.run(d.to, later(1)); got != tcOK {
		t.Fatalf("later fragment of an allowed datagram: %d, want pass", got)
	}
	if n := d.count(ingress, maps.ReasonForwardedPolicy); n != 2 {
		t.Errorf("allowed-by-policy %d, want 2 (the later fragment inherits its first's reason)", n)
	}
	// Denied port: the first drops on policy, the later one has no first.
	if got := d.run(d.to, frag4(webIP, podIP, 17, 2, 0, true, udpFirst(1000, 5001))); got != tcShot {
		t.Fatalf("first fragment to a denied port: %d, want drop", got)
	}
	if got := d.run(d.to, later(2)); got != tcShot {
		t.Fatalf("later fragment of a denied datagram: %d, want drop", got)
	}
	// A later fragment whose first was never seen.
	if got := d.run(d.to, later(3)); got != tcShot {
		t.Fatalf("later fragment without first: %d, want drop", got)
	}
	// The same ID from another source is another datagram.
	if got := d.run(d.to, frag4(dbIP, podIP, 17, 1, 185, false, make([]byte, 8))); got != tcShot {
		t.Fatalf("later fragment of db with web's ID: %d, want drop", got)
	}
	if n := d.count(ingress, maps.ReasonDropPolicy); n != 1 {
		t.Errorf("policy-denied %d, want 1", n)
	}
	if n := d.count(ingress, maps.ReasonDropFragNoFirst); n != 3 {
		t.Errorf("fragment-no-first %d, want 3", n)
	}
}

// Fragments that come before their first are dropped: the datagram is
// lost (the receiver's reassembly times out), later fragments after the
// first pass. The same holds for the other direction.
func TestFragmentOutOfOrder(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	later := frag4(webIP, podIP, 17, 7, 185, false, make([]byte, 100))
	middle := frag4(webIP, podIP, 17, 7, 10, true, make([]byte, 80))
	if got := d.run(d.to, later); got != tcShot {
		t.Fatalf("last fragment before the first: %d, want drop", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 17, 7, 0, true, udpFirst(1000, 5000))); got != tcOK {
		t.Fatalf("first fragment after a later one: %d, want pass", got)
	}
	for _, p := range [][]byte{later, middle} {
		if got := d.run(d.to, p); got != tcOK {
			t.Fatalf("fragment after its first: %d, want pass", got)
		}
	}
	if n := d.count(ingress, maps.ReasonDropFragNoFirst); n != 1 {
		t.Errorf("fragment-no-first %d, want 1", n)
	}
	// An entry is per enforcement point: the same datagram leaving the pod
	// is not covered by its ingress verdict.
	d.endpoint(maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced)
	if got := d.run(d.from, frag4(podIP, webIP, 17, 7, 185, false, make([]byte, 100))); got != tcShot {
		t.Fatalf("egress fragment with an ingress entry's key: %d, want drop", got)
	}
}

// A first fragment sent again with other ports is judged on its own: it
// cannot carry the datagram's later fragments to a denied port, and a
// denied one leaves nothing behind for them.
func TestOverlappingFirstFragmentCannotSwitchPorts(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	d.allow(ingress, webIdent, 17, 22, 0, true)
	later := frag4(webIP, podIP, 17, 9, 185, false, make([]byte, 100))
	if got := d.run(d.to, frag4(webIP, podIP, 17, 9, 0, true, udpFirst(1000, 5000))); got != tcOK {
		t.Fatalf("allowed first fragment: %d", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 17, 9, 0, true, udpFirst(1000, 22))); got != tcShot {
		t.Fatalf("second first fragment to a denied port: %d, want drop", got)
	}
	if got := d.run(d.to, later); got != tcShot {
		t.Fatalf("later fragment after a denied first: %d, want drop", got)
	}
	// Same with the default deny instead of a deny rule.
	if got := d.run(d.to, frag4(webIP, podIP, 17, 10, 0, true, udpFirst(1000, 5000))); got != tcOK {
		t.Fatalf("allowed first fragment: %d", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 17, 10, 0, true, udpFirst(1000, 6000))); got != tcShot {
		t.Fatalf("second first fragment to an unallowed port: %d, want drop", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 17, 10, 185, false, make([]byte, 8))); got != tcShot {
		t.Fatalf("later fragment after an unallowed first: %d, want drop", got)
	}
	if d.count(ingress, maps.ReasonDropPolicyDeny) != 1 || d.count(ingress, maps.ReasonDropPolicy) != 1 ||
		d.count(ingress, maps.ReasonDropFragNoFirst) != 2 {
		t.Errorf("counters: deny-rule %d policy-denied %d fragment-no-first %d", d.count(ingress, maps.ReasonDropPolicyDeny),
			d.count(ingress, maps.ReasonDropPolicy), d.count(ingress, maps.ReasonDropFragNoFirst))
	}
}

// A first fragment too short for its L4 header (RFC 1858) drops, and so
// do the fragments after it.
func TestTinyFirstFragment(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 0, 0, 0, false) // everything from web
	tcpPorts := tcp(1000, 80)[:8]
	if got := d.run(d.to, frag4(webIP, podIP, 6, 11, 0, true, tcpPorts)); got != tcShot {
		t.Fatalf("first TCP fragment of 8 bytes: %d, want drop", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 6, 11, 1, false, make([]byte, 40))); got != tcShot {
		t.Fatalf("the rest of it: %d, want drop", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 17, 12, 0, true, udp(1000, 53)[:4])); got != tcShot {
		t.Fatalf("first UDP fragment of 4 bytes: %d, want drop", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 6, 13, 0, true, append(tcp(1000, 80), 1, 2, 3, 4, 5, 6, 7, 8))); got != tcOK {
		t.Fatalf("first TCP fragment with its whole header: %d, want pass", got)
	}
	if n := d.count(ingress, maps.ReasonDropFragTooShort); n != 2 {
		t.Errorf("fragment-too-short %d, want 2", n)
	}
	if n := d.count(ingress, maps.ReasonDropFragNoFirst); n != 1 {
		t.Errorf("fragment-no-first %d, want 1", n)
	}
}

// Replies and pings: a fragmented datagram that passes on conntrack, and
// fragmented ICMP echo, have their later fragments pass too.
func TestFragmentedRepliesAndPing(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	d.allow(ingress, webIdent, 1, 8, 0, false)
	if got := d.run(d.to, ipv4(webIP, podIP, 17, udp(1000, 5000))); got != tcOK {
		t.Fatal("request dropped")
	}
	// The pod's large answer leaves fragmented through its enforced egress.
	if got := d.run(d.from, frag4(podIP, webIP, 17, 20, 0, true, udpFirst(5000, 1000))); got != tcOK {
		t.Fatalf("first fragment of the reply: %d, want pass", got)
	}
	if got := d.run(d.from, frag4(podIP, webIP, 17, 20, 185, false, make([]byte, 100))); got != tcOK {
		t.Fatalf("later fragment of the reply: %d, want pass", got)
	}
	if n := d.count(egress, maps.ReasonForwardedCT); n != 2 {
		t.Errorf("egress established %d, want 2", n)
	}
	ping := append(icmp(8, 33), make([]byte, 64)...)
	if got := d.run(d.to, frag4(webIP, podIP, 1, 21, 0, true, ping)); got != tcOK {
		t.Fatalf("first fragment of a large ping: %d, want pass", got)
	}
	if got := d.run(d.to, frag4(webIP, podIP, 1, 21, 9, false, make([]byte, 100))); got != tcOK {
		t.Fatalf("later fragment of a large ping: %d, want pass", got)
	}
	if got := d.run(d.from, frag4(podIP, webIP, 1, 22, 0, true, append(icmp(0, 33), make([]byte, 64)...))); got != tcOK {
		t.Fatalf("first fragment of the echo reply: %d, want pass", got)
	}
	if got := d.run(d.from, frag4(podIP, webIP, 1, 22, 9, false, make([]byte, 100))); got != tcOK {
		t.Fatalf("later fragment of the echo reply: %d, want pass", got)
	}
}

func TestIPv6ExtensionHeadersAndFragments(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	d.allow(ingress, webIdent, 6, 443, 0, false)

	cases := []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"TCP 443 behind hop-by-hop, routing and destination options",
			ipv6ext(web6, pod6, 6, tcp(1000, 443), ext(nhHop), ext(nhRouting), ext(nhDest)), tcOK},
		{"TCP 444 behind the same", ipv6ext(web6, pod6, 6, tcp(1000, 444), ext(nhHop), ext(nhDest)), tcShot},
		{"first fragment to UDP 5000 behind hop-by-hop and destination options",
			ipv6ext(web6, pod6, 17, udpFirst(1000, 5000), ext(nhHop), ext(nhDest), fragHdr(1, 0, true)), tcOK},
		{"its later fragment", ipv6ext(web6, pod6, 17, make([]byte, 100), ext(nhHop), ext(nhDest), fragHdr(1, 181, false)), tcOK},
		{"its later fragment without the other headers", ipv6ext(web6, pod6, 17, make([]byte, 100), fragHdr(1, 190, false)), tcOK},
		{"first fragment to UDP 5001", ipv6ext(web6, pod6, 17, udpFirst(1000, 5001), ext(nhDest), fragHdr(2, 0, true)), tcShot},
		{"its later fragment", ipv6ext(web6, pod6, 17, make([]byte, 100), fragHdr(2, 181, false)), tcShot},
		{"later fragment without first", ipv6ext(web6, pod6, 17, make([]byte, 100), fragHdr(3, 181, false)), tcShot},
		{"atomic fragment (offset 0, no more) to UDP 5000", ipv6ext(web6, pod6, 17, udp(1000, 5000), fragHdr(4, 0, false)), tcOK},
		{"tiny first fragment", ipv6ext(web6, pod6, 17, udp(1000, 5000)[:4], fragHdr(5, 0, true)), tcShot},
		{"hop-by-hop not first", ipv6ext(web6, pod6, 6, tcp(1000, 443), ext(nhDest), ext(nhHop)), tcShot},
		{"two fragment headers", ipv6ext(web6, pod6, 17, udpFirst(1000, 5000), fragHdr(6, 0, true), fragHdr(6, 0, true)), tcShot},
		{"extension header cut short", ipv6(web6, pod6, nhDest, []byte{17}), tcShot},
	}
	for _, c := range cases {
		if got := d.run(d.to, c.pkt); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	for reason, want := range map[uint8]uint64{
		maps.ReasonForwardedPolicy:    4,
		maps.ReasonDropPolicy:         2,
		maps.ReasonDropFragNoFirst:    2,
		maps.ReasonDropFragTooShort:   1,
		maps.ReasonDropIPv6ExtHeaders: 2,
		maps.ReasonDropMalformed:      1,
	} {
		if n := d.count(ingress, reason); n != want {
			t.Errorf("%s: %d, want %d", maps.ReasonName(reason), n, want)
		}
	}
}

// The walk through extension headers is bounded: eight pass, a ninth is
// more than the datapath looks through and drops with a reason of its own.
func TestIPv6TooManyExtensionHeaders(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 6, 443, 0, false)
	chain := func(n int) [][2][]byte {
		exts := [][2][]byte{ext(nhHop)}
		for len(exts) < n {
			exts = append(exts, ext(nhDest))
		}
		return exts
	}
	if got := d.run(d.to, ipv6ext(web6, pod6, 6, tcp(1000, 443), chain(8)...)); got != tcOK {
		t.Fatalf("eight extension headers: %d, want pass", got)
	}
	if got := d.run(d.to, ipv6ext(web6, pod6, 6, tcp(1000, 443), chain(9)...)); got != tcShot {
		t.Fatalf("nine extension headers: %d, want drop", got)
	}
	// Egress too, where anti-spoofing comes first and passes.
	if got := d.run(d.from, ipv6ext(pod6, web6, 6, tcp(1001, 443), chain(12)...)); got != tcShot {
		t.Fatalf("twelve extension headers out: %d, want drop", got)
	}
	if d.count(ingress, maps.ReasonDropIPv6ExtHeaders) != 1 || d.count(egress, maps.ReasonDropIPv6ExtHeaders) != 1 {
		t.Errorf("ipv6-ext-headers ingress %d egress %d, want 1 and 1",
			d.count(ingress, maps.ReasonDropIPv6ExtHeaders), d.count(egress, maps.ReasonDropIPv6ExtHeaders))
	}
}

func TestFragmentDropEvent(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	rd := d.events()
	d.run(d.to, frag4(webIP, podIP, 17, 30, 185, false, make([]byte, 8)))
	ev := readEvent(t, rd)
	if ev.Type != maps.EventDrop || ev.Reason != maps.ReasonDropFragNoFirst || ev.Protocol != 17 || ev.EndpointID != epID {
		t.Fatalf("drop event %+v", ev)
	}
}

// An entry older than a fragment's lifetime passes nothing: the IPv4 ID
// wraps, and a new datagram must not inherit an old one's ports. One
// written since the fragment's clock was read (another CPU) is fresh.
func TestFragmentEntryLifetime(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 17, 5000, 0, false)
	if got := d.run(d.to, frag4(webIP, podIP, 17, 40, 0, true, udpFirst(1000, 5000))); got != tcOK {
		t.Fatal("first fragment dropped")
	}
	m := d.coll.Maps[maps.FragmentsMapName]
	var k maps.FragmentKey
	var v maps.FragmentValue
	if it := m.Iterate(); !it.Next(&k, &v) {
		t.Fatalf("no entry after an allowed first fragment: %v", it.Err())
	}
	if want := [4]byte{0, 40, 0, 0}; k.ID != want || k.EndpointID != epID || k.Dir != ingress || k.Protocol != 17 ||
		binary.BigEndian.Uint16(v.DPort[:]) != 5000 || v.Reason != maps.ReasonForwardedPolicy {
		t.Fatalf("entry %+v -> %+v", k, v)
	}
	later := frag4(webIP, podIP, 17, 40, 185, false, make([]byte, 8))
	fresh := v.LastSeen
	v.LastSeen = fresh + 3600e9 // an hour ahead: "written after now"
	d.put(maps.FragmentsMapName, k, v)
	if got := d.run(d.to, later); got != tcOK {
		t.Fatalf("later fragment, entry written after its clock read: %d, want pass", got)
	}
	if fresh < 61e9 {
		t.Skip("booted less than a minute ago: no entry can be older than the lifetime")
	}
	v.LastSeen = fresh - 61e9
	d.put(maps.FragmentsMapName, k, v)
	if got := d.run(d.to, later); got != tcShot {
		t.Fatalf("later fragment, entry 61 s old: %d, want drop", got)
	}
}
