package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// These tests run the datapath programs on crafted packets with
// BPF_PROG_RUN: no interface, no netns, exact verdicts and counters.
// BPF_PROG_RUN runs a tc program on the loopback device, so the endpoint
// under test is the one keyed by ifindex 1.

const (
	tcOK   = 0
	tcShot = 2

	epID     = 42
	epIdent  = 300
	webIdent = 301
	dbIdent  = 302
)

var (
	podIP  = netip.MustParseAddr("10.77.0.5")
	webIP  = netip.MustParseAddr("10.77.0.6")
	dbIP   = netip.MustParseAddr("10.77.0.7")
	hostIP = netip.MustParseAddr("10.77.0.1")
	pod6   = netip.MustParseAddr("fd77::5")
	web6   = netip.MustParseAddr("fd77::6")
)

type datapath struct {
	t        testing.TB
	coll     *ebpf.Collection
	from, to *ebpf.Program
}

func load(t *testing.T) *datapath { return loadColl(t, testutil.LoadDatapath(t)) }

// loadColl fills the ipcache of a loaded datapath.
func loadColl(t testing.TB, coll *ebpf.Collection) *datapath {
	d := &datapath{t: t, coll: coll, from: coll.Programs["from_container"], to: coll.Programs["to_container"]}
	for ip, id := range map[netip.Addr]uint32{webIP: webIdent, dbIP: dbIdent, hostIP: 1, web6: webIdent, podIP: epIdent, pod6: epIdent} {
		d.put(maps.IPCacheMapName, maps.NewIPCacheKey(netip.PrefixFrom(ip, ip.BitLen())), maps.IPCacheValue{Identity: id})
	}
	return d
}

func (d *datapath) put(m string, k, v any) {
	d.t.Helper()
	if err := d.coll.Maps[m].Put(k, v); err != nil {
		d.t.Fatalf("%s put: %v", m, err)
	}
}

func (d *datapath) endpoint(flags uint16) {
	v := maps.NewEndpointValue(epID, epIdent, podIP, pod6, "", "")
	v.Flags |= flags
	d.put(maps.EndpointsMapName, maps.EndpointKey{IfIndex: 1}, v)
}

func (d *datapath) allow(dir uint8, identity uint32, proto uint8, port, end uint16, deny bool) {
	var v maps.PolicyValue
	if deny {
		v.Flags = maps.PolicyFlagDeny
	}
	for _, k := range maps.PolicyKeys(epID, dir, identity, proto, port, end) {
		d.put(maps.PolicyMapName, k, v)
	}
}

func (d *datapath) run(p *ebpf.Program, pkt []byte) uint32 {
	d.t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		d.t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret
}

func (d *datapath) count(dir, reason uint8) uint64 {
	var vals []maps.MetricsValue
	err := d.coll.Maps[maps.MetricsMapName].Lookup(maps.MetricsKey{EndpointID: epID, Dir: dir, Reason: reason}, &vals)
	if err != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}

// Packet builders (checksums are not checked by the programs).
var (
	eth  = testutil.Eth
	ipv4 = testutil.IPv4
	ipv6 = testutil.IPv6
	tcp  = testutil.TCP
	udp  = testutil.UDP
	icmp = testutil.ICMP
	tcp4 = testutil.TCP4
)

const (
	ingress = 0
	egress  = 1
)

func TestNoEndpointDropsAndNonIPPasses(t *testing.T) {
	d := load(t)
	if got := d.run(d.from, tcp4(podIP, webIP, 1000, 80)); got != tcShot {
		t.Fatalf("packet on an interface without endpoint entry: %d, want drop", got)
	}
	d.endpoint(0)
	arp := eth(0x0806, make([]byte, 28))
	if got := d.run(d.from, arp); got != tcOK {
		t.Fatalf("ARP: %d, want pass", got)
	}
	if got := d.run(d.from, ipv4(podIP, webIP, 6, []byte{1, 2})); got != tcShot {
		t.Fatalf("truncated TCP header: %d, want drop", got)
	}
	if d.count(egress, maps.ReasonDropMalformed) != 1 || d.count(egress, maps.ReasonForwardedNotIP) != 1 {
		t.Fatal("counters of malformed / not-IP packets wrong")
	}
}

func TestAntiSpoofing(t *testing.T) {
	d := load(t)
	d.endpoint(0)
	if got := d.run(d.from, tcp4(dbIP, webIP, 1000, 80)); got != tcShot {
		t.Fatalf("pod sending from another pod's address: %d, want drop", got)
	}
	if got := d.run(d.from, ipv6(web6, pod6, 17, udp(1, 2))); got != tcShot {
		t.Fatalf("spoofed IPv6 source: %d, want drop", got)
	}
	if got := d.run(d.from, tcp4(podIP, webIP, 1000, 80)); got != tcOK {
		t.Fatalf("own address, no policy: %d, want pass", got)
	}
	if n := d.count(egress, maps.ReasonDropSpoofed); n != 2 {
		t.Fatalf("spoof counter %d, want 2", n)
	}
	// Neighbour discovery from the link-local address is not spoofing.
	ns := ipv6(netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::1:ff00:6"), 58, icmp(135, 0))
	if got := d.run(d.from, ns); got != tcOK {
		t.Fatalf("neighbour solicitation: %d, want pass", got)
	}
}

func TestIngressPolicyByIdentityAndPort(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 6, 80, 0, false)

	cases := []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"web to port 80", tcp4(webIP, podIP, 1111, 80), tcOK},
		{"web to port 81", tcp4(webIP, podIP, 1112, 81), tcShot},
		{"db to port 80", tcp4(dbIP, podIP, 1113, 80), tcShot},
		{"web UDP 80", ipv4(webIP, podIP, 17, udp(1114, 80)), tcShot},
		{"unknown (world) to 80", tcp4(netip.MustParseAddr("192.0.2.1"), podIP, 1115, 80), tcShot},
	}
	for _, c := range cases {
		if got := d.run(d.to, c.pkt); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if d.count(ingress, maps.ReasonForwardedPolicy) != 1 || d.count(ingress, maps.ReasonDropPolicy) != 4 {
		t.Errorf("counters: allowed %d denied %d", d.count(ingress, maps.ReasonForwardedPolicy), d.count(ingress, maps.ReasonDropPolicy))
	}
	// Egress is not enforced: anything goes out.
	if got := d.run(d.from, tcp4(podIP, dbIP, 2222, 5432)); got != tcOK {
		t.Fatalf("unenforced egress: %d", got)
	}
}

func TestWildcardAndDenyPrecedence(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, 0, 0, 0, 0, false)      // allow from all: one entry
	d.allow(ingress, dbIdent, 6, 0, 0, true) // but deny TCP from db
	if got := d.run(d.to, tcp4(webIP, podIP, 1, 443)); got != tcOK {
		t.Errorf("web via wildcard: %d, want pass", got)
	}
	if got := d.run(d.to, tcp4(dbIP, podIP, 1, 443)); got != tcShot {
		t.Errorf("db denied despite wildcard allow: %d, want drop", got)
	}
	if got := d.run(d.to, ipv4(dbIP, podIP, 17, udp(1, 53))); got != tcOK {
		t.Errorf("db UDP (deny is TCP only): %d, want pass", got)
	}
	// A wildcard deny on a port beats a specific allow.
	d.allow(ingress, webIdent, 6, 22, 0, false)
	d.allow(ingress, 0, 6, 22, 0, true)
	if got := d.run(d.to, tcp4(webIP, podIP, 2, 22)); got != tcShot {
		t.Errorf("wildcard deny on 22 vs web allow: %d, want drop", got)
	}
	if d.count(ingress, maps.ReasonDropPolicyDeny) != 2 {
		t.Errorf("deny counter %d, want 2", d.count(ingress, maps.ReasonDropPolicyDeny))
	}
}

func TestPortRange(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 6, 8000, 8080, false)
	for port, want := range map[uint16]uint32{7999: tcShot, 8000: tcOK, 8042: tcOK, 8080: tcOK, 8081: tcShot} {
		if got := d.run(d.to, tcp4(webIP, podIP, 3000+port%100, port)); got != want {
			t.Errorf("port %d: %d, want %d", port, got, want)
		}
	}
}

func TestConntrackRepliesPassUnsolicitedDoNot(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced)
	d.allow(ingress, webIdent, 6, 80, 0, false)
	d.allow(egress, dbIdent, 17, 53, 0, false)

	// web -> pod:80 allowed; the pod's reply passes its enforced egress.
	if got := d.run(d.to, tcp4(webIP, podIP, 40000, 80)); got != tcOK {
		t.Fatal("allowed SYN dropped")
	}
	if got := d.run(d.from, tcp4(podIP, webIP, 80, 40000)); got != tcOK {
		t.Fatal("reply of an allowed connection dropped")
	}
	if got := d.run(d.to, tcp4(webIP, podIP, 40000, 80)); got != tcOK {
		t.Fatal("established packet dropped")
	}
	// The pod opening a connection to web is not a reply: dropped.
	if got := d.run(d.from, tcp4(podIP, webIP, 40001, 80)); got != tcShot {
		t.Fatal("unsolicited egress passed")
	}
	// UDP request out and its answer in.
	if got := d.run(d.from, ipv4(podIP, dbIP, 17, udp(5353, 53))); got != tcOK {
		t.Fatal("allowed UDP request dropped")
	}
	if got := d.run(d.to, ipv4(dbIP, podIP, 17, udp(53, 5353))); got != tcOK {
		t.Fatal("UDP reply dropped")
	}
	if got := d.run(d.to, ipv4(dbIP, podIP, 17, udp(53, 5354))); got != tcShot {
		t.Fatal("UDP to another port passed as a reply")
	}
	// Which key conntrack tries first follows the ports (from a lower port
	// to a higher one is likely a reply); a flow started the other way
	// round is established in both directions all the same.
	d.allow(ingress, webIdent, 17, 6000, 0, false)
	for i, p := range []struct {
		prog     *ebpf.Program
		src, dst netip.Addr
		sp, dp   uint16
	}{{d.to, webIP, podIP, 53, 6000}, {d.to, webIP, podIP, 53, 6000}, {d.from, podIP, webIP, 6000, 53}} {
		if got := d.run(p.prog, ipv4(p.src, p.dst, 17, udp(p.sp, p.dp))); got != tcOK {
			t.Fatalf("flow from port 53 to 6000, packet %d dropped", i)
		}
	}
	if d.count(ingress, maps.ReasonForwardedCT) != 3 || d.count(egress, maps.ReasonForwardedCT) != 2 {
		t.Errorf("CT counters ingress %d egress %d", d.count(ingress, maps.ReasonForwardedCT), d.count(egress, maps.ReasonForwardedCT))
	}
}

func TestICMPEcho(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced)
	d.allow(egress, webIdent, 1, 8, 0, false) // icmps type 8 (echo request) to web
	if got := d.run(d.from, ipv4(podIP, webIP, 1, icmp(8, 77))); got != tcOK {
		t.Fatal("allowed echo request dropped")
	}
	if got := d.run(d.to, ipv4(webIP, podIP, 1, icmp(0, 77))); got != tcOK {
		t.Fatal("echo reply dropped")
	}
	if got := d.run(d.to, ipv4(webIP, podIP, 1, icmp(0, 78))); got != tcShot {
		t.Fatal("echo reply of another id passed")
	}
	if got := d.run(d.to, ipv4(webIP, podIP, 1, icmp(8, 79))); got != tcShot {
		t.Fatal("unsolicited echo request passed")
	}
}

func TestIPv6Policy(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	d.allow(ingress, webIdent, 6, 443, 0, false)
	if got := d.run(d.to, ipv6(web6, pod6, 6, tcp(5000, 443))); got != tcOK {
		t.Fatal("IPv6 allowed flow dropped")
	}
	if got := d.run(d.to, ipv6(web6, pod6, 6, tcp(5000, 444))); got != tcShot {
		t.Fatal("IPv6 other port passed")
	}
	if got := d.run(d.from, ipv6(pod6, web6, 6, tcp(443, 5000))); got != tcOK {
		t.Fatal("IPv6 reply dropped")
	}
	if got := d.run(d.to, ipv6(web6, pod6, 58, icmp(128, 1))); got != tcShot {
		t.Fatal("ICMPv6 echo not allowed by policy passed")
	}
}

func TestEvents(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	rd := d.events()
	d.run(d.to, tcp4(dbIP, podIP, 1234, 80))
	ev := readEvent(t, rd)
	if ev.Type != maps.EventDrop || ev.Reason != maps.ReasonDropPolicy || ev.SrcIdentity != dbIdent || ev.DstIdentity != epIdent ||
		ev.EndpointID != epID || binary.BigEndian.Uint16(ev.DPort[:]) != 80 || ev.Protocol != 6 {
		t.Fatalf("drop event %+v", ev)
	}
}

// An event that finds the ring buffer full is counted, so an operator sees
// that the monitor missed some: nothing reads the ring here, so once it is
// full every further drop's event is lost.
func TestEventsLostWhenRingFull(t *testing.T) {
	d := load(t)
	d.endpoint(maps.EndpointFlagIngressEnforced)
	const n = 20000 // more records than the 1 MiB ring holds
	if _, err := d.to.Run(&ebpf.RunOptions{Data: tcp4(dbIP, podIP, 1234, 80), Repeat: n}); err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	drops, lost := d.count(ingress, maps.ReasonDropPolicy), d.count(ingress, maps.ReasonEventLost)
	if drops != n {
		t.Fatalf("%d policy drops counted, want %d", drops, n)
	}
	if lost == 0 || lost >= n {
		t.Fatalf("%d events counted lost of %d with nothing reading the ring, want some but not all", lost, n)
	}
	if maps.IsDrop(maps.ReasonEventLost) {
		t.Error("a lost event counted as a drop")
	}
}
