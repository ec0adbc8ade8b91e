package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// BenchmarkMetricsScrape: what Prometheus metrics cost an agent with
// 1,000 endpoints (made through the API without veths): the duration of
// a scrape of /metrics and the agent CPU it takes, and the agent's
// resident memory with --prometheus-serve-addr and without it.
func BenchmarkMetricsScrape(b *testing.B) {
	setup(b)
	const endpoints, scrapes = 1000, 50
	var sb strings.Builder

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	on := startScaleAgent(b, endpoints, "--prometheus-serve-addr", addr)
	var durs []float64
	var size int
	cpu0 := cpuSeconds(b, on.PID())
	for range scrapes {
		start := time.Now()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatalf("scrape: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		durs = append(durs, ms(time.Since(start)))
		size = len(body)
	}
	cpuPerScrape := (cpuSeconds(b, on.PID()) - cpu0) / scrapes * 1000
	rssOn := rssMiB(b, on.PID())
	on.Stop()

	off := startScaleAgent(b, endpoints)
	rssOff := rssMiB(b, off.PID())
	off.Stop()

	fmt.Fprintf(&sb, "agent with %d endpoints (API, no veths), %d sequential scrapes of /metrics:\n", endpoints, scrapes)
	fmt.Fprintf(&sb, "  scrape duration: median %.2f ms, p99 %.2f ms; exposition %d bytes\n", median(durs), percentile(durs, 99), size)
	fmt.Fprintf(&sb, "  agent CPU per scrape: %.2f ms\n", cpuPerScrape)
	fmt.Fprintf(&sb, "  agent RSS: metrics on %.1f MiB, off %.1f MiB", rssOn, rssOff)
	printResults(b, sb.String())
	b.ReportMetric(median(durs), "scrape-ms")
	b.ReportMetric(cpuPerScrape, "cpu-ms/scrape")
	b.ReportMetric(rssOn, "rss-on-MiB")
	b.ReportMetric(rssOff, "rss-off-MiB")
	b.ReportMetric(0, "ns/op")
}

// startScaleAgent runs an agent with a /21 pod CIDR and n ready endpoints.
func startScaleAgent(b *testing.B, n int, extra ...string) *e2eutil.Agent {
	b.Helper()
	a := e2eutil.StartAgent(b, e2eutil.AgentConfig{
		Binary: bins.Agent, TempPattern: "mbbench", Pool: e2eutil.PoolBench, Bits: 21,
		Extra: extra, ReadyWithin: 30 * time.Second,
	})
	addr := a.PodCIDR.Addr().Next()
	for i := range n {
		addr = addr.Next()
		name := fmt.Sprintf("pod-%d", i)
		a.PutPod(models.Pod{Namespace: "default", Name: name, Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%20)}})
		ep, err := a.Client.PutEndpoint(ctxFor(b, 30*time.Second), "0", &models.EndpointChangeRequest{
			ContainerID: fmt.Sprintf("bench-%d", i), ContainerInterfaceName: "eth0",
			Addressing: &models.AddressPair{IPv4: addr.String()}, K8sNamespace: "default", K8sPodName: name,
			SyncBuildEndpoint: true,
		})
		if err != nil {
			b.Fatalf("PUT /v1/endpoint (%d of %d): %v", i+1, n, err)
		}
		if ep.State != models.StateReady {
			b.Fatalf("endpoint %d is %s after a sync build", ep.ID, ep.State)
		}
	}
	return a
}

// cpuSeconds is a process's user+system CPU time (/proc/PID/stat).
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// rssMiB is a process's resident memory (VmRSS of /proc/PID/status).
func rssMiB(b *testing.B, pid int) float64 {
	b.Helper()
	return float64(procStatusKB(b, pid, "VmRSS")) / 1024
}

// procStatusKB is a field of /proc/PID/status given in kB (VmRSS,
// RssAnon, RssFile), in kB.
func procStatusKB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
