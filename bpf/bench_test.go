package bpf_test

import (
	"fmt"
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
)

// BenchmarkEstablished is the cost of one run of from_container on a
// packet of an established TCP flow from the pod to web, another local
// endpoint, with both ends enforcing policy: a request (the flow's own
// direction) and a reply (of a flow web opened), in each host routing
// mode. BPF_PROG_RUN runs the program alone on one packet again and
// again, so the maps' memory stays in the caches and the packet is never
// a clone to be copied before it is rewritten: a floor for the per-packet
// cost, which the datapath benchmark (test/bench) measures in traffic.
// make bench runs it; the figure is ns/run.
func BenchmarkEstablished(b *testing.B) {
	const enforced = maps.EndpointFlagIngressEnforced | maps.EndpointFlagEgressEnforced
	for _, hr := range []bool{false, true} {
		mode := map[bool]string{false: "legacy", true: "bpf"}[hr]
		for _, reply := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/%s", mode, map[bool]string{false: "request", true: "reply"}[reply]), func(b *testing.B) {
				d := loadMode(b, hr, enforced)
				d.endpoint(enforced)
				// The flow's entries at both ends, as its first packets
				// left them.
				sport, dport := uint16(40000), uint16(80)
				if reply {
					sport, dport = 80, 50000
					d.tcpFlow(webIP, podIP, 50000, 80, egress, webEpID)
					d.tcpFlow(webIP, podIP, 50000, 80, ingress, epID)
				} else {
					d.tcpFlow(podIP, webIP, 40000, 80, egress, epID)
					d.tcpFlow(podIP, webIP, 40000, 80, ingress, webEpID)
				}
				pkt := tcp4(podIP, webIP, sport, dport)
				// Host routing lowers the TTL on every run of the same
				// packet: from 255, a batch stays above the stack's 1.
				pkt[14+8] = 255
				pkt = withChecksum(pkt)
				want := uint32(tcOK)
				if hr {
					want = tcRedirect
				}
				const batch = 200
				var total float64
				for done := 0; done < b.N; done += batch {
					n := min(batch, b.N-done)
					ret, per, err := d.from.Benchmark(pkt, n, nil)
					if err != nil {
						b.Fatal(err)
					}
					if ret != want {
						b.Fatalf("verdict %d, want %d", ret, want)
					}
					total += float64(per.Nanoseconds()) * float64(n)
				}
				b.ReportMetric(total/float64(b.N), "ns/run")
			})
		}
	}
}
