package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

const (
	iperfPort    = 5201
	sockperfPort = 11111
	// closedPort has no listener in the server pod and is not allowed by
	// the policy: a connection to it times out when the policy is enforced
	// and is refused when it is not.
	closedPort = 9
)

// podPair is a client and a server pod on one network.
type podPair struct {
	net            *network
	server, client *pod
}

// BenchmarkDatapath measures pod-to-pod traffic through membrane's
// datapath (the programs on both pods' host veths, with an L4 allow
// policy selecting the server) against the same traffic between two pods
// on ptp: routed veth pairs, no programs. For each of MEMBRANE_BENCH_RUNS
// (default 5) rounds the two plugins run back to back, the first plugin
// alternating between rounds; the medians are compared.
//
//   - throughput: iperf3, one TCP stream, 3 s per run, client -> server;
//   - request/response: sockperf ping-pong over TCP (one 14-byte request
//     in flight, answered before the next), 3 s per run, client and server
//     both pinned to the same CPU with taskset (unpinned results are
//     bimodal), transactions/s and the p50 round trip.
func BenchmarkDatapath(b *testing.B) {
	setup(b)
	for _, tool := range []string{"iperf3", "sockperf", "taskset", "bash", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s is needed (make deps installs iperf3 and sockperf): %v", tool, err)
		}
	}
	runs := envInt("MEMBRANE_BENCH_RUNS", 5)
	cpu := strconv.Itoa(runtime.NumCPU() - 1)

	a := startAgent(b)
	pairs := []*podPair{{net: membraneNetwork(b, a)}, {net: ptpNetwork(b)}}
	for _, pp := range pairs {
		pp.server = newPod(b, pp.net.Plugin+"-server")
		pp.client = newPod(b, pp.net.Plugin+"-client")
		if pp.net.Plugin == "membrane" {
			a.putPod("default", pp.server.Name, map[string]string{"app": "bench-server"})
			a.putPod("default", pp.client.Name, map[string]string{"app": "bench-client"})
		}
		for _, p := range []*pod{pp.server, pp.client} {
			if _, err := pp.net.add(p); err != nil {
				b.Fatal(err)
			}
			if !p.IP.IsValid() {
				b.Fatalf("%s: pod %s got no IPv4 address", pp.net.Plugin, p.Name)
			}
		}
	}
	policy := loadPolicy(b, a, pairs[0])

	for _, pp := range pairs {
		ip := pp.server.IP.String()
		pp.server.background(b, "iperf3", "-s", "-B", ip, "-p", strconv.Itoa(iperfPort))
		pp.server.background(b, "taskset", "-c", cpu, "sockperf", "server", "--tcp", "-i", ip, "-p", strconv.Itoa(sockperfPort))
	}
	// Warm up (and wait for the servers to listen): one short run of each
	// tool per pair, not recorded.
	for _, pp := range pairs {
		retry(b, 15*time.Second, pp.net.Plugin+": iperf3 warm-up", func() error { _, err := iperf(pp, 1); return err })
		retry(b, 15*time.Second, pp.net.Plugin+": sockperf warm-up", func() error { _, err := sockperf(pp, cpu, 1); return err })
	}

	gbps := make([][]float64, len(pairs))
	tps := make([][]float64, len(pairs))
	rtt := make([][]float64, len(pairs))
	for r := range runs {
		for _, i := range alternate(r) {
			g, err := iperf(pairs[i], 3)
			if err != nil {
				b.Fatal(err)
			}
			gbps[i] = append(gbps[i], g)
		}
	}
	for r := range runs {
		for _, i := range alternate(r) {
			res, err := sockperf(pairs[i], cpu, 3)
			if err != nil {
				b.Fatal(err)
			}
			tps[i] = append(tps[i], res.tps)
			rtt[i] = append(rtt[i], res.p50us)
		}
	}

	med := func(xs [][]float64, i int) float64 { return median(xs[i]) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "pod to pod, membrane (%s) vs ptp, %d alternated runs of 3 s per plugin, medians\n", policy, runs)
	fmt.Fprintf(&sb, "%-40s %-14s %-14s %s\n", "measure", "membrane", "ptp", "ratio membrane/ptp")
	fmt.Fprintf(&sb, "%-40s %-14s %-14s %.2f\n", "TCP throughput, 1 stream (iperf3)",
		fmt.Sprintf("%.2f Gbit/s", med(gbps, 0)), fmt.Sprintf("%.2f Gbit/s", med(gbps, 1)), med(gbps, 0)/med(gbps, 1))
	fmt.Fprintf(&sb, "%-40s %-14s %-14s %.2f\n", "TCP req/resp, pinned to CPU "+cpu+" (sockperf)",
		fmt.Sprintf("%.0f /s", med(tps, 0)), fmt.Sprintf("%.0f /s", med(tps, 1)), med(tps, 0)/med(tps, 1))
	fmt.Fprintf(&sb, "%-40s %-14s %-14s %.2f\n", "  round trip p50",
		fmt.Sprintf("%.1f µs", med(rtt, 0)), fmt.Sprintf("%.1f µs", med(rtt, 1)), med(rtt, 0)/med(rtt, 1))
	fmt.Fprintf(&sb, "runs, membrane | ptp:\n  Gbit/s   %s | %s\n  trans/s  %s | %s\n  p50 µs   %s | %s",
		fmtRuns(gbps[0], "%.1f"), fmtRuns(gbps[1], "%.1f"), fmtRuns(tps[0], "%.0f"), fmtRuns(tps[1], "%.0f"),
		fmtRuns(rtt[0], "%.1f"), fmtRuns(rtt[1], "%.1f"))
	printResults(b, sb.String())

	b.ReportMetric(med(gbps, 0), "membrane-Gbit/s")
	b.ReportMetric(med(gbps, 1), "ptp-Gbit/s")
	b.ReportMetric(med(gbps, 0)/med(gbps, 1), "throughput-ratio")
	b.ReportMetric(med(tps, 0), "membrane-trans/s")
	b.ReportMetric(med(tps, 1), "ptp-trans/s")
	b.ReportMetric(med(tps, 0)/med(tps, 1), "trans/s-ratio")
	b.ReportMetric(med(rtt, 0), "membrane-rtt-p50-µs")
	b.ReportMetric(med(rtt, 1), "ptp-rtt-p50-µs")
	b.ReportMetric(med(rtt, 0)/med(rtt, 1), "rtt-p50-ratio")
}

// alternate is the order of the two plugins in round r: m p, p m, m p, ...
func alternate(r int) []int {
	if r%2 == 0 {
		return []int{0, 1}
	}
	return []int{1, 0}
}

func fmtRuns(xs []float64, f string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(s, " ")
}

// retry runs f until it succeeds, at most for d.
func retry(b *testing.B, d time.Duration, what string, f func() error) {
	b.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: still failing after %s: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loadPolicy imports an L4 allow policy on membrane: the server's labels
// accept the client's labels on the iperf3 and sockperf ports, nothing
// else. It waits (up to 30 s) until both endpoints report the policy's
// revision and checks that a port the policy does not allow is dropped.
// It returns what the membrane numbers were measured with; anything short
// of an enforced policy is spelled out in capitals in the results.
func loadPolicy(b *testing.B, a *agent, pp *podPair) string {
	b.Helper()
	rules := []map[string]any{{
		"endpointSelector": map[string]any{"matchLabels": map[string]string{"app": "bench-server"}},
		"ingress": []any{map[string]any{
			"fromEndpoints": []any{map[string]any{"matchLabels": map[string]string{"app": "bench-client"}}},
			"toPorts": []any{map[string]any{"ports": []any{
				map[string]string{"port": strconv.Itoa(iperfPort), "protocol": "TCP"},
				map[string]string{"port": strconv.Itoa(sockperfPort), "protocol": "TCP"},
			}}},
		}},
	}}
	var ans struct {
		Revision uint64 `json:"revision"`
	}
	err := a.Client.Do(ctxFor(b, 30*time.Second), "PUT", "/v1/policy", rules, &ans)
	if client.IsStatus(err, 404) {
		// TODO: the policy API is not in this agent yet; once PUT
		// /v1/policy exists this path is no longer taken and the numbers
		// are measured with the policy loaded.
		return "NO POLICY LOADED: PUT /v1/policy answered 404"
	}
	if err != nil {
		b.Fatalf("PUT /v1/policy: %v", err)
	}
	var lagging []string
	for _, p := range []*pod{pp.server, pp.client} {
		id := plugin.Attachment{ContainerID: p.ContainerID, IfName: "eth0"}.EndpointID()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ep, err := a.Client.GetEndpoint(ctxFor(b, 10*time.Second), id)
			if err != nil {
				b.Fatalf("GET endpoint of %s: %v", p.Name, err)
			}
			if ep.State == models.StateReady && ep.PolicyRevision >= ans.Revision {
				break
			}
			if time.Now().After(deadline) {
				lagging = append(lagging, fmt.Sprintf("%s is %s at policy revision %d", p.Name, ep.State, ep.PolicyRevision))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	rev := fmt.Sprintf("revision %d", ans.Revision)
	if lagging != nil {
		rev += fmt.Sprintf(" (after 30 s %s)", strings.Join(lagging, ", "))
	}
	// A connection to a port nobody listens on: refused (RST) if the
	// packet reaches the server, a timeout if the policy drops it.
	_, stderr, err := pp.client.exec(10*time.Second, "timeout", "2", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", pp.server.IP, closedPort))
	var ee *exec.ExitError
	switch {
	case err == nil:
		return fmt.Sprintf("L4 allow policy, %s, NOT ENFORCED: port %d accepted a connection", rev, closedPort)
	case errors.As(err, &ee) && ee.ExitCode() == 124:
		return fmt.Sprintf("L4 allow policy TCP %d,%d, %s, enforced: port %d dropped", iperfPort, sockperfPort, rev, closedPort)
	case strings.Contains(stderr, "refused"):
		return fmt.Sprintf("L4 allow policy, %s, NOT ENFORCED: port %d answered with a reset", rev, closedPort)
	default:
		return fmt.Sprintf("L4 allow policy, %s, enforcement unverified: probe of port %d: %v", rev, closedPort, err)
	}
}

// iperf runs one iperf3 client for secs seconds and returns the
// throughput the server received, in Gbit/s.
func iperf(pp *podPair, secs int) (float64, error) {
	out, _, err := pp.client.exec(time.Duration(secs+20)*time.Second, "iperf3", "-c", pp.server.IP.String(),
		"-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "3000")
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || res.Error != "" || err != nil {
		return 0, fmt.Errorf("%s: iperf3: %v %s", pp.net.Plugin, err, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

type rrResult struct{ tps, p50us float64 }

var (
	reValid = regexp.MustCompile(`\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)`)
	reP50   = regexp.MustCompile(`percentile 50\.000 =\s*([0-9.]+)`)
)

// sockperf runs one pinned TCP ping-pong client for secs seconds.
func sockperf(pp *podPair, cpu string, secs int) (rrResult, error) {
	out, _, err := pp.client.exec(time.Duration(secs+20)*time.Second, "taskset", "-c", cpu, "sockperf", "ping-pong",
		"--tcp", "-i", pp.server.IP.String(), "-p", strconv.Itoa(sockperfPort), "-t", strconv.Itoa(secs), "--full-rtt")
	if err != nil {
		return rrResult{}, fmt.Errorf("%s: %w", pp.net.Plugin, err)
	}
	v, p := reValid.FindStringSubmatch(out), reP50.FindStringSubmatch(out)
	if v == nil || p == nil {
		return rrResult{}, fmt.Errorf("%s: sockperf printed no statistics: %s", pp.net.Plugin, e2eutil.LastLines(out, 10))
	}
	secsValid, _ := strconv.ParseFloat(v[1], 64)
	n, _ := strconv.ParseFloat(v[2], 64)
	p50, _ := strconv.ParseFloat(p[1], 64)
	if secsValid <= 0 {
		return rrResult{}, fmt.Errorf("%s: sockperf ran for %v s", pp.net.Plugin, secsValid)
	}
	return rrResult{tps: n / secsValid, p50us: p50}, nil
}
