package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// eBPF host routing (--host-routing=bpf): from_container judges a packet
// for another local endpoint by that endpoint's ingress policy too, and
// redirects it into the endpoint's netns. BPF_PROG_RUN does not perform
// the redirect: what is observable is the program's return code
// (TC_ACT_REDIRECT, what bpf_redirect_peer returns), the packet it leaves
// (MACs, TTL, checksum), the counters and the events.

const (
	tcRedirect = 7

	webEpID    = 43
	webIfIndex = 77 // any number: the redirect is not carried out
)

var (
	webMAC     = []byte{0x02, 0xaa, 0, 0, 0, 0x06}
	webHostMAC = []byte{0x02, 0xbb, 0, 0, 0, 0x06}
)

// loadMode is load with host routing on or off, with web a local
// endpoint behind ifindex webIfIndex: its ipcache entries name the
// ifindex, its endpoint entry its MACs and ingressFlags.
func loadMode(t testing.TB, hostRouting bool, ingressFlags uint16) *datapath {
	d := loadColl(t, testutil.LoadDatapathMode(t, hostRouting))
	for _, ip := range []netip.Addr{webIP, web6} {
		d.put(maps.IPCacheMapName, maps.NewIPCacheKey(netip.PrefixFrom(ip, ip.BitLen())),
			maps.IPCacheValue{Identity: webIdent, IfIndex: webIfIndex})
	}
	d.endpoint(0)
	v := maps.NewEndpointValue(webEpID, webIdent, webIP, web6, "02:aa:00:00:00:06", "02:bb:00:00:00:06")
	v.Flags |= ingressFlags
	d.put(maps.EndpointsMapName, maps.EndpointKey{IfIndex: webIfIndex}, v)
	return d
}

// runOut runs p on pkt and returns the verdict and the packet it leaves.
func (d *datapath) runOut(p *ebpf.Program, pkt []byte) (uint32, []byte) {
	d.t.Helper()
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	ret, err := p.Run(opts)
	if err != nil {
		d.t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func (d *datapath) countOf(ep uint16, dir, reason uint8) uint64 {
	var vals []maps.MetricsValue
	if d.coll.Maps[maps.MetricsMapName].Lookup(maps.MetricsKey{EndpointID: ep, Dir: dir, Reason: reason}, &vals) != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}

// withChecksum fills in the IPv4 header checksum of an Ethernet frame.
func withChecksum(pkt []byte) []byte {
	ip := pkt[14 : 14+20]
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^csum(ip))
	return pkt
}

// csum is the one's complement sum of b in 16-bit words.
func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// tcpFlow writes the conntrack entry of an IPv4 TCP flow at endpoint ep
// in direction dir, seen now: established as if its packets had passed.
func (d *datapath) tcpFlow(src, dst netip.Addr, sport, dport uint16, dir uint8, ep uint16) {
	d.t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		d.t.Fatal(err)
	}
	k := maps.ConntrackKey{Protocol: 6, Family: 4, Dir: dir}
	s4, d4 := src.As4(), dst.As4()
	copy(k.SAddr[:], s4[:])
	copy(k.DAddr[:], d4[:])
	binary.BigEndian.PutUint16(k.SPort[:], sport)
	binary.BigEndian.PutUint16(k.DPort[:], dport)
	d.put(maps.ConntrackMapName, k, maps.ConntrackValue{LastSeen: uint64(ts.Nano()), EndpointID: ep})
}

func TestHostRoutingRedirectsToLocalEndpoint(t *testing.T) {
	d := loadMode(t, true, 0)
	rd := d.events()
	in := withChecksum(tcp4(podIP, webIP, 40000, 80))
	ret, out := d.runOut(d.from, in)
	if ret != tcRedirect {
		t.Fatalf("allowed packet to a local endpoint: %d, want TC_ACT_REDIRECT (%d)", ret, tcRedirect)
	}
	if !bytes.Equal(out[0:6], webMAC) || !bytes.Equal(out[6:12], webHostMAC) {
		t.Errorf("MACs %x -> %x, want %x (host veth) -> %x (pod)", out[6:12], out[0:6], webHostMAC, webMAC)
	}
	if out[14+8] != 63 {
		t.Errorf("TTL %d, want 63", out[14+8])
	}
	if csum(out[14:34]) != 0xffff {
		t.Errorf("IPv4 header checksum wrong after the TTL decrement: %x", out[14:34])
	}
	same := func(b []byte) []byte {
		c := append([]byte{}, b[12:]...)
		c[14+8-12], c[14+10-12], c[14+11-12] = 0, 0, 0 // TTL, checksum
		return c
	}
	if !bytes.Equal(same(in), same(out)) {
		t.Errorf("more than MACs, TTL and checksum changed:\n in %x\nout %x", in, out)
	}
	// Judged twice, as with the stack: the pod's egress, web's ingress,
	// each with its verdict event; the ingress one names web's veth.
	if n := d.countOf(epID, egress, maps.ReasonForwardedUnenforced); n != 1 {
		t.Errorf("egress counted %d, want 1", n)
	}
	if n := d.countOf(webEpID, ingress, maps.ReasonForwardedUnenforced); n != 1 {
		t.Errorf("web's ingress counted %d, want 1", n)
	}
	ev := readEvent(t, rd)
	if ev.Type != maps.EventVerdict || ev.Dir != egress || ev.EndpointID != epID || ev.IfIndex != 1 {
		t.Errorf("first event %+v, want the egress verdict on ifindex 1", ev)
	}
	ev = readEvent(t, rd)
	if ev.Type != maps.EventVerdict || ev.Dir != ingress || ev.EndpointID != webEpID || ev.IfIndex != webIfIndex ||
		ev.SrcIdentity != epIdent || ev.DstIdentity != webIdent {
		t.Errorf("second event %+v, want web's ingress verdict on ifindex %d", ev, webIfIndex)
	}
	// The next packet of the flow is established at both points.
	if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 40000, 80))); ret != tcRedirect {
		t.Fatalf("established packet: %d, want redirect", ret)
	}
	if d.countOf(epID, egress, maps.ReasonForwardedCT) != 1 || d.countOf(webEpID, ingress, maps.ReasonForwardedCT) != 1 {
		t.Errorf("established counters: egress %d, web ingress %d, want 1 and 1",
			d.countOf(epID, egress, maps.ReasonForwardedCT), d.countOf(webEpID, ingress, maps.ReasonForwardedCT))
	}

	// IPv6: the hop limit, no checksum.
	ret, out = d.runOut(d.from, ipv6(pod6, web6, 17, udp(5000, 53)))
	if ret != tcRedirect || out[14+7] != 63 || !bytes.Equal(out[0:6], webMAC) {
		t.Errorf("IPv6 to a local endpoint: %d, hop limit %d, dst MAC %x", ret, out[14+7], out[0:6])
	}
}

func TestHostRoutingIngressPolicyDrops(t *testing.T) {
	d := loadMode(t, true, maps.EndpointFlagIngressEnforced)
	rd := d.events()
	// web allows TCP 80 from this pod's identity only.
	for _, k := range maps.PolicyKeys(webEpID, ingress, epIdent, 6, 80, 0) {
		d.put(maps.PolicyMapName, k, maps.PolicyValue{})
	}
	if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 40000, 81))); ret != tcShot {
		t.Fatalf("packet web's ingress policy denies: %d, want drop", ret)
	}
	if n := d.countOf(webEpID, ingress, maps.ReasonDropPolicy); n != 1 {
		t.Errorf("web's ingress policy-denied counted %d, want 1", n)
	}
	readEvent(t, rd) // the egress verdict
	ev := readEvent(t, rd)
	if ev.Type != maps.EventDrop || ev.Reason != maps.ReasonDropPolicy || ev.Dir != ingress || ev.EndpointID != webEpID ||
		ev.IfIndex != webIfIndex || ev.SrcIdentity != epIdent || ev.DstIdentity != webIdent ||
		binary.BigEndian.Uint16(ev.DPort[:]) != 81 {
		t.Errorf("drop event %+v, want web's ingress policy-denied on ifindex %d", ev, webIfIndex)
	}
	if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 40001, 80))); ret != tcRedirect {
		t.Errorf("packet web's ingress policy allows: %d, want redirect", ret)
	}
	// A packet the pod's egress drops never reaches web's ingress.
	d.endpoint(maps.EndpointFlagEgressEnforced)
	if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 40002, 80))); ret != tcShot {
		t.Fatalf("packet the egress policy denies: %d, want drop", ret)
	}
	if d.countOf(epID, egress, maps.ReasonDropPolicy) != 1 || d.countOf(webEpID, ingress, maps.ReasonForwardedPolicy) != 1 {
		t.Errorf("egress drop %d (want 1), web ingress allowed %d (want 1, from before)",
			d.countOf(epID, egress, maps.ReasonDropPolicy), d.countOf(webEpID, ingress, maps.ReasonForwardedPolicy))
	}
}

// A reply is established at both ends by the entries of the flow it
// answers, whichever of web's two conntrack keys holds it: host routing
// looks up the reply key first there (the pod's egress found a reply),
// then the key of the packet's own direction.
func TestHostRoutingReplies(t *testing.T) {
	// Both ends enforce policy and allow nothing: only conntrack passes.
	d := loadMode(t, true, maps.EndpointFlagIngressEnforced|maps.EndpointFlagEgressEnforced)
	d.endpoint(maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced)
	ct := d.tcpFlow
	reply := func(what string, sport uint16) {
		t.Helper()
		before := d.countOf(webEpID, ingress, maps.ReasonForwardedCT)
		if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 80, sport))); ret != tcRedirect {
			t.Fatalf("%s: reply %d, want redirect", what, ret)
		}
		if n := d.countOf(webEpID, ingress, maps.ReasonForwardedCT) - before; n != 1 {
			t.Errorf("%s: web's ingress counted %d established, want 1", what, n)
		}
	}

	// web (port 50000) connected to the pod's port 80: what web's egress
	// and the pod's ingress recorded.
	ct(webIP, podIP, 50000, 80, egress, webEpID)
	ct(webIP, podIP, 50000, 80, ingress, epID)
	reply("entry of web's egress", 50000)

	// The same flow known at web's ingress under the reply's own key only
	// (as an entry of a flow the pod had started with these ports would
	// be): found on the second lookup.
	ct(webIP, podIP, 50001, 80, ingress, epID)
	ct(podIP, webIP, 80, 50001, ingress, webEpID)
	reply("entry of the reply's own direction", 50001)

	// Without an entry at web, its ingress policy decides: dropped.
	ct(webIP, podIP, 50002, 80, ingress, epID)
	if ret, _ := d.runOut(d.from, withChecksum(tcp4(podIP, webIP, 80, 50002))); ret != tcShot {
		t.Errorf("reply web's end does not know: %d, want drop", ret)
	}
	if n := d.countOf(epID, egress, maps.ReasonForwardedCT); n != 3 {
		t.Errorf("the pod's egress counted %d replies established, want 3", n)
	}
}

// Everything host routing does not apply to passes to the stack unchanged
// and unjudged by the destination's ingress: to_container judges it there.
func TestHostRoutingLeavesTheRestToTheStack(t *testing.T) {
	d := loadMode(t, true, 0)
	pass := func(what string, pkt []byte) {
		t.Helper()
		ret, out := d.runOut(d.from, pkt)
		if ret != tcOK {
			t.Errorf("%s: %d, want pass to the stack", what, ret)
		}
		if !bytes.Equal(out, pkt) {
			t.Errorf("%s: packet changed:\n in %x\nout %x", what, pkt, out)
		}
	}
	pass("to a pod without ifindex (remote)", withChecksum(tcp4(podIP, dbIP, 1, 80)))
	pass("to the host", withChecksum(tcp4(podIP, hostIP, 1, 80)))
	pass("to the world", withChecksum(tcp4(podIP, netip.MustParseAddr("192.0.2.1"), 1, 80)))
	ttl1 := tcp4(podIP, webIP, 2, 80)
	ttl1[14+8] = 1
	pass("TTL 1 (the stack sends time exceeded)", withChecksum(ttl1))
	pass("ARP", eth(0x0806, make([]byte, 28)))
	if n := d.countOf(webEpID, ingress, maps.ReasonForwardedUnenforced); n != 0 {
		t.Errorf("web's ingress counted %d packets the stack forwards", n)
	}
	// An ifindex whose endpoint entry is another pod's now (reused).
	d.put(maps.IPCacheMapName, maps.NewIPCacheKey(netip.PrefixFrom(dbIP, 32)), maps.IPCacheValue{Identity: dbIdent, IfIndex: webIfIndex})
	pass("to an address its ipcache ifindex's endpoint does not own", withChecksum(tcp4(podIP, dbIP, 3, 80)))
	// An endpoint entry without MACs.
	d.put(maps.EndpointsMapName, maps.EndpointKey{IfIndex: webIfIndex}, maps.NewEndpointValue(webEpID, webIdent, webIP, web6, "", ""))
	pass("to an endpoint without MACs", withChecksum(tcp4(podIP, webIP, 4, 80)))
}

func TestHostRoutingLegacyModePasses(t *testing.T) {
	d := loadMode(t, false, 0)
	in := withChecksum(tcp4(podIP, webIP, 40000, 80))
	ret, out := d.runOut(d.from, in)
	if ret != tcOK || !bytes.Equal(out, in) {
		t.Fatalf("legacy mode, packet to a local endpoint: %d, changed %v; want pass unchanged", ret, !bytes.Equal(out, in))
	}
	if d.countOf(webEpID, ingress, maps.ReasonForwardedUnenforced) != 0 {
		t.Error("legacy mode judged web's ingress in from_container")
	}
}

// Fragments take the same path as whole packets; web's ingress judges a
// later fragment by its own first fragment's entry, as to_container does.
func TestHostRoutingFragments(t *testing.T) {
	d := loadMode(t, true, maps.EndpointFlagIngressEnforced)
	for _, k := range maps.PolicyKeys(webEpID, ingress, epIdent, 17, 5000, 0) {
		d.put(maps.PolicyMapName, k, maps.PolicyValue{})
	}
	run := func(what string, pkt []byte, want uint32) {
		t.Helper()
		if ret, _ := d.runOut(d.from, withChecksum(pkt)); ret != want {
			t.Errorf("%s: %d, want %d", what, ret, want)
		}
	}
	rd := d.events()
	run("allowed first fragment", frag4(podIP, webIP, 17, 7, 0, true, udpFirst(1000, 5000)), tcRedirect)
	run("its later fragment", frag4(podIP, webIP, 17, 7, 9, false, make([]byte, 32)), tcRedirect)
	if n := d.countOf(webEpID, ingress, maps.ReasonForwardedPolicy); n != 2 {
		t.Errorf("web's ingress allowed %d fragments, want 2", n)
	}
	run("first fragment web denies", frag4(podIP, webIP, 17, 8, 0, true, udpFirst(1000, 5001)), tcShot)
	run("its later fragment", frag4(podIP, webIP, 17, 8, 9, false, make([]byte, 32)), tcShot)
	if n := d.countOf(webEpID, ingress, maps.ReasonDropFragNoFirst); n != 1 {
		t.Errorf("web's ingress fragment-no-first %d, want 1", n)
	}
	// Verdicts of the allowed first fragment at the egress and at web's
	// ingress (later fragments that pass send none), then the egress
	// verdict of the denied one and web's ingress drop of it.
	for range 4 {
		readEvent(t, rd)
	}
	// The later fragment passed the egress (no event) and drops at web's
	// ingress with no ports, as to_container reports it.
	ev := readEvent(t, rd)
	if ev.Type != maps.EventDrop || ev.Reason != maps.ReasonDropFragNoFirst || ev.EndpointID != webEpID ||
		ev.IfIndex != webIfIndex || binary.BigEndian.Uint16(ev.DPort[:]) != 0 {
		t.Errorf("later fragment's drop event %+v, want web's fragment-no-first without ports", ev)
	}
}
