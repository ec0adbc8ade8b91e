package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Goals of the control plane at scale (docs/benchmarks-controlplane.md).
const (
	goalHeapPerEndpoint = 10 << 10 // bytes above the idle agent's
	goalRestore         = 3 * time.Second
	goalPolicy          = time.Second
)

// BenchmarkControlPlane measures one agent's control plane at 0, 100 and
// 1,000 endpoints, made through the API without veths (PUT /v1/pod, then
// PUT /v1/endpoint with a sync build; no netns: every table, reconciler
// and pinned map is written as for a pod, only no program is attached).
// Endpoint i has the label app=app-(i%20). At each level:
//
//   - memory: the live Go heap (GET /v1/debug/runtime?gc=1) and the RSS;
//     per endpoint is the growth over the idle agent (0 endpoints)
//     divided by the endpoints;
//   - identity allocation: cpProbes endpoints with label sets no one has
//     (each a new identity), one after the other, against as many with
//     an existing label set; removed again before the next level;
//   - policy (100 and 1,000): a CiliumNetworkPolicy of 20 rules, one
//     per app (ingress from the next app on TCP 8000+n), PUT with a new
//     port cpPolicyPuts times; the time from the PUT being sent until the
//     pinned policy map holds the new port's key of every endpoint (each
//     endpoint's key polled, the last one found ends it);
//   - restore: the agent killed with SIGKILL and started again on
//     its state dir and bpffs, cpRestores times; the time from the start
//     of the process until it answers /v1/healthz ("serves"), and until
//     /v1/healthz counts every endpoint ready ("restored": each restored
//     from endpoints.json, its identity honoured, its datapath and policy
//     rows written and reconciled into the pinned maps, the regeneration
//     done).
//
// MEMBRANE_BENCH_CP_ENDPOINTS (default 1000) sets the top level.
func BenchmarkControlPlane(b *testing.B) {
	setup(b)
	top := envInt("MEMBRANE_BENCH_CP_ENDPOINTS", 1000)
	levels := []int{0, 100, top}
	if top <= 100 {
		levels = []int{0, top}
	}
	// A /21: the endpoints plus the probes of every level.
	a := e2eutil.StartAgent(b, e2eutil.AgentConfig{
		Binary: bins.Agent, TempPattern: "mbbench", Pool: e2eutil.PoolBench, Bits: 21,
		ReadyWithin: 30 * time.Second,
	})
	cp := &controlPlane{b: b, a: a, next: a.PodCIDR.Addr().Next()}

	var sb strings.Builder
	fmt.Fprintf(&sb, "one agent, endpoints through the API without veths, %d apps; load average %s at the start\n", cpApps, loadAvg())
	fmt.Fprintf(&sb, "endpoint creations one at a time: /s and agent CPU ms each, with a new identity and with known labels\n")
	fmt.Fprintf(&sb, "restart: kill -9, then ms until the agent serves / until every endpoint is ready again (medians of %d)\n", cpRestores)
	fmt.Fprintf(&sb, "%-10s %-9s %-9s %-10s %-10s %-18s %-18s %-18s %-14s\n",
		"endpoints", "heap MiB", "RSS MiB", "heap/ep", "RSS/ep", "new identity", "known labels", "policy ms p50/max", "restart ms")
	var idle *cpMemory
	var heapPerEp, rssPerEp, anonPerEp float64
	var policyTop, serve, restored []float64
	for _, n := range levels {
		fill := cp.fillTo(n)
		rt := cp.settledRuntime()
		if idle == nil {
			idle = rt
		}
		perEp := func(v, v0 int64) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f KiB", float64(v-v0)/float64(n)/1024)
		}
		if n > 0 {
			heapPerEp = float64(rt.HeapBytes-idle.HeapBytes) / float64(n)
			rssPerEp = float64(rt.RSSBytes-idle.RSSBytes) / float64(n)
			anonPerEp = float64(rt.anonKB-idle.anonKB) * 1024 / float64(n)
		}
		newIDs, known := cp.identityRate(n)
		pol := "-"
		if n > 0 {
			durs := cp.policyChanges(n)
			pol = fmt.Sprintf("%.0f/%.0f", median(durs), percentile(durs, 100))
			if n == top {
				policyTop = durs
			}
		}
		serve, restored = cp.restores(n)
		rateText := func(r cpRate) string { return fmt.Sprintf("%.0f/s %.1f ms", r.perSec, r.cpuMs) }
		fmt.Fprintf(&sb, "%-10d %-9.1f %-9.1f %-10s %-10s %-18s %-18s %-18s %.0f / %.0f\n", n,
			float64(rt.HeapBytes)/(1<<20), float64(rt.RSSBytes)/(1<<20),
			perEp(rt.HeapBytes, idle.HeapBytes), perEp(rt.RSSBytes, idle.RSSBytes), rateText(newIDs), rateText(known), pol,
			median(serve), median(restored))
		fmt.Fprintf(&sb, "%-10s (RSS: anonymous %.1f MiB %s, file pages %.1f MiB %s)\n", "",
			float64(rt.anonKB)/1024, perEp(rt.anonKB<<10, idle.anonKB<<10), float64(rt.fileKB)/1024, perEp(rt.fileKB<<10, idle.fileKB<<10))
		if fill.n > 0 {
			fmt.Fprintf(&sb, "%-10s (filled %d endpoints at %.0f/s, %.1f ms agent CPU each)\n", "", fill.n,
				float64(fill.n)/fill.took.Seconds(), fill.cpuMs)
		}
		b.ReportMetric(newIDs.perSec, fmt.Sprintf("new-identities/s-%dep", n))
		b.ReportMetric(newIDs.cpuMs, fmt.Sprintf("cpu-ms/new-identity-%dep", n))
		b.ReportMetric(median(restored), fmt.Sprintf("restore-ms-%dep", n))
	}
	// The restarted agent's memory: what it holds of the same endpoints
	// without the history of their creation.
	after := cp.settledRuntime()
	fmt.Fprintf(&sb, "%-10s (after the restarts: heap %.1f MiB, RSS %.1f MiB, per endpoint %.1f / %.1f KiB, anonymous %.1f KiB)\n", "",
		float64(after.HeapBytes)/(1<<20), float64(after.RSSBytes)/(1<<20),
		float64(after.HeapBytes-idle.HeapBytes)/float64(top)/1024, float64(after.RSSBytes-idle.RSSBytes)/float64(top)/1024,
		float64(after.anonKB-idle.anonKB)/float64(top))

	ok := func(pass bool) string {
		if pass {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(&sb, "\nat %d endpoints against the goals:\n", top)
	fmt.Fprintf(&sb, "  live heap per endpoint above idle: %6.1f KiB   [< %d KiB] %s\n", heapPerEp/1024, goalHeapPerEndpoint>>10,
		ok(heapPerEp < goalHeapPerEndpoint))
	fmt.Fprintf(&sb, "  RSS per endpoint above idle:       %6.1f KiB   [< %d KiB] %s (anonymous memory %.1f KiB)\n", rssPerEp/1024, goalHeapPerEndpoint>>10,
		ok(rssPerEp < goalHeapPerEndpoint), anonPerEp/1024)
	fmt.Fprintf(&sb, "  kill -9 -> serving:                %6.0f ms    median of %d (max %.0f)\n", median(serve), len(serve), percentile(serve, 100))
	fmt.Fprintf(&sb, "  kill -9 -> all endpoints ready:    %6.0f ms    [< %d ms] %s median of %d (max %.0f)\n", median(restored),
		goalRestore.Milliseconds(), ok(median(restored) < float64(goalRestore.Milliseconds())), len(restored), percentile(restored, 100))
	fmt.Fprintf(&sb, "  PUT /v1/policy -> last endpoint's key in the policy map: %.0f ms [< %d ms] %s median of %d (max %.0f)",
		median(policyTop), goalPolicy.Milliseconds(), ok(median(policyTop) < float64(goalPolicy.Milliseconds())), len(policyTop),
		percentile(policyTop, 100))
	printResults(b, sb.String())
	b.ReportMetric(heapPerEp, "heap-B/endpoint")
	b.ReportMetric(rssPerEp, "rss-B/endpoint")
	b.ReportMetric(anonPerEp, "rss-anon-B/endpoint")
	b.ReportMetric(median(serve), "restart-to-serve-ms")
	b.ReportMetric(median(policyTop), "policy-ms")
}

const (
	cpApps       = 20
	cpProbes     = 50
	cpPolicyPuts = 5
	cpRestores   = 3
)

// loadAvg is the machine's load over the last minute (/proc/loadavg):
// wall times are only comparable between runs on an idle machine.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(raw))[0]
}

type controlPlane struct {
	b    *testing.B
	a    *e2eutil.Agent
	next netip.Addr // the next free pod address
	// eps are the endpoints of the levels: ID and identity.
	eps []cpEndpoint
	// port is the port of the last policy PUT (0: none yet).
	port uint16
}

type cpEndpoint struct {
	id       uint16
	identity uint32
}

// create registers pod name with labels and makes its endpoint.
func (cp *controlPlane) create(name string, labels map[string]string) cpEndpoint {
	cp.b.Helper()
	cp.next = cp.next.Next()
	cp.a.PutPod(models.Pod{Namespace: "default", Name: name, Labels: labels})
	ep, err := cp.a.Client.PutEndpoint(ctxFor(cp.b, 30*time.Second), "0", &models.EndpointChangeRequest{
		ContainerID: "cp-" + name, ContainerInterfaceName: "eth0",
		Addressing: &models.AddressPair{IPv4: cp.next.String()}, K8sNamespace: "default", K8sPodName: name,
		SyncBuildEndpoint: true,
	})
	if err != nil {
		cp.b.Fatalf("PUT /v1/endpoint for %s: %v", name, err)
	}
	if ep.State != models.StateReady || ep.Identity == nil {
		cp.b.Fatalf("endpoint %d (%s) is %s after a sync build", ep.ID, name, ep.State)
	}
	return cpEndpoint{id: uint16(ep.ID), identity: uint32(ep.Identity.ID)}
}

type fillResult struct {
	n     int
	took  time.Duration
	cpuMs float64 // agent CPU per endpoint
}

// fillTo creates the level's endpoints up to n.
func (cp *controlPlane) fillTo(n int) fillResult {
	start, from, cpu0 := time.Now(), len(cp.eps), cpuSeconds(cp.b, cp.a.PID())
	for i := len(cp.eps); i < n; i++ {
		cp.eps = append(cp.eps, cp.create(fmt.Sprintf("cp-%d", i), map[string]string{"app": fmt.Sprintf("app-%d", i%cpApps)}))
	}
	r := fillResult{n: n - from, took: time.Since(start)}
	if r.n > 0 {
		r.cpuMs = (cpuSeconds(cp.b, cp.a.PID()) - cpu0) * 1000 / float64(r.n)
	}
	return r
}

// cpMemory is a reading of the agent's memory: the runtime's counts
// and the RSS split into anonymous memory (the Go heap, stacks, the
// runtime's own) and file pages (mostly the binary's code and data, as
// far as it has run: not per endpoint).
type cpMemory struct {
	*models.Runtime
	anonKB, fileKB int64
}

// settledRuntime reads the agent's memory once the writes of the last
// changes (state files, reconcilers) have landed: the live heap after
// two collections, the smallest of three readings a second apart.
func (cp *controlPlane) settledRuntime() *cpMemory {
	cp.b.Helper()
	var best *cpMemory
	for range 3 {
		time.Sleep(time.Second)
		rt, err := cp.a.Client.RuntimeAfterGC(ctxFor(cp.b, 10*time.Second))
		if err != nil {
			cp.b.Fatalf("GET /v1/debug/runtime?gc=1: %v", err)
		}
		if best == nil || rt.HeapBytes < best.HeapBytes {
			pid := cp.a.PID()
			best = &cpMemory{Runtime: rt, anonKB: procStatusKB(cp.b, pid, "RssAnon"), fileKB: procStatusKB(cp.b, pid, "RssFile")}
		}
	}
	return best
}

// cpRate is endpoints created per second, one at a time, and the agent
// CPU each took (user+system; what other load on the machine does not
// change).
type cpRate struct{ perSec, cpuMs float64 }

// identityRate creates cpProbes endpoints with new label sets, then as
// many with the label set of an existing endpoint, and returns both
// rates; then it removes them again.
func (cp *controlPlane) identityRate(level int) (newIDs, known cpRate) {
	cp.b.Helper()
	var probes []cpEndpoint
	var names []string
	rate := func(kind string, labels func(j int) map[string]string) cpRate {
		start, cpu0 := time.Now(), cpuSeconds(cp.b, cp.a.PID())
		for j := range cpProbes {
			name := fmt.Sprintf("cp-probe-%d-%s-%d", level, kind, j)
			names = append(names, name)
			probes = append(probes, cp.create(name, labels(j)))
		}
		return cpRate{perSec: cpProbes / time.Since(start).Seconds(),
			cpuMs: (cpuSeconds(cp.b, cp.a.PID()) - cpu0) * 1000 / cpProbes}
	}
	newIDs = rate("new", func(j int) map[string]string {
		return map[string]string{"app": fmt.Sprintf("probe-%d-%d", level, j)}
	})
	known = rate("known", func(j int) map[string]string {
		return map[string]string{"app": fmt.Sprintf("app-%d", j%cpApps)}
	})
	for i, p := range probes {
		if err := cp.a.Client.DeleteEndpoint(ctxFor(cp.b, 30*time.Second), fmt.Sprint(p.id)); err != nil {
			cp.b.Fatalf("DELETE /v1/endpoint/%d: %v", p.id, err)
		}
		if err := cp.a.Client.DeletePod(ctxFor(cp.b, 30*time.Second), "default", names[i]); err != nil {
			cp.b.Fatalf("DELETE /v1/pod/default/%s: %v", names[i], err)
		}
	}
	return newIDs, known
}

// policyDoc is the CiliumNetworkPolicy of the policy changes: app k
// accepts TCP port from app k+1.
func policyDoc(port uint16) map[string]any {
	var specs []any
	for k := range cpApps {
		specs = append(specs, map[string]any{
			"endpointSelector": map[string]any{"matchLabels": map[string]string{"app": fmt.Sprintf("app-%d", k)}},
			"ingress": []any{map[string]any{
				"fromEndpoints": []any{map[string]any{"matchLabels": map[string]string{"app": fmt.Sprintf("app-%d", (k+1)%cpApps)}}},
				"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": fmt.Sprint(port), "protocol": "TCP"}}}},
			}},
		})
	}
	return map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
		"metadata": map[string]any{"name": "bench-cp", "namespace": "default"},
		"specs":    specs,
	}
}

// putPolicy PUTs the policy with port and returns the time until the
// pinned policy map holds, for every endpoint of the level, the key
// allowing its peer app's identity on that port.
func (cp *controlPlane) putPolicy(pm *ebpf.Map, port uint16) time.Duration {
	cp.b.Helper()
	// Endpoint i (app i%20) accepts from app (i+1)%20, whose identity
	// endpoint (i+1)%20 carries.
	pending := make(map[maps.PolicyKey]bool, len(cp.eps))
	for i, e := range cp.eps {
		peer := cp.eps[(i%cpApps+1)%cpApps].identity
		pending[maps.PolicyKeys(e.id, maps.DirIngress, peer, maps.ProtoTCP, port, port)[0]] = true
	}
	start := time.Now()
	if err := cp.a.Client.Do(ctxFor(cp.b, 30*time.Second), "PUT", "/v1/policy", policyDoc(port), nil); err != nil {
		cp.b.Fatalf("PUT /v1/policy: %v", err)
	}
	for {
		for k := range pending {
			var v maps.PolicyValue
			err := pm.Lookup(&k, &v)
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				cp.b.Fatalf("looking up %s: %v", k, err)
			}
			// An LPM lookup finds the longest prefix: the key itself once
			// it is there (the policy has no wider entry for the peer).
			if err == nil && v.Flags&maps.PolicyFlagDeny == 0 {
				delete(pending, k)
			}
		}
		if len(pending) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			cp.b.Fatalf("policy on port %d: %d of %d endpoints' keys not in the policy map within a minute", port, len(pending), len(cp.eps))
		}
		time.Sleep(time.Millisecond)
	}
}

// policyChanges makes the policy select every endpoint (waiting for
// that), then changes its port cpPolicyPuts times, one after the
// other, and returns each change's time in ms.
func (cp *controlPlane) policyChanges(level int) []float64 {
	cp.b.Helper()
	pm, err := maps.OpenPinned(cp.a.BPFRoot, maps.PolicyMapName)
	if err != nil {
		cp.b.Fatal(err)
	}
	defer pm.Close()
	if cp.port == 0 {
		cp.port = 8000
		cp.putPolicy(pm, cp.port) // the first policy: endpoints were allowing all
	}
	var out []float64
	for range cpPolicyPuts {
		cp.port++
		out = append(out, ms(cp.putPolicy(pm, cp.port)))
	}
	return out
}

// restores kills the agent with SIGKILL and starts it again cpRestores
// times; it returns the times (ms) from the start of the process until
// it serves and until it counts all n endpoints ready.
func (cp *controlPlane) restores(n int) (serve, restored []float64) {
	cp.b.Helper()
	for range cpRestores {
		cp.a.Kill()
		start := time.Now()
		if err := cp.a.Start(); err != nil { // returns once /v1/healthz answers (polled every 50 ms)
			cp.b.Fatal(err)
		}
		serve = append(serve, ms(time.Since(start)))
		for {
			st, err := cp.a.Client.Healthz(ctxFor(cp.b, 5*time.Second))
			if err != nil {
				cp.b.Fatalf("GET /v1/healthz after the restart: %v", err)
			}
			if st.Endpoints[string(models.StateReady)] == n {
				restored = append(restored, ms(time.Since(start)))
				break
			}
			if time.Since(start) > 2*time.Minute {
				cp.b.Fatalf("%d endpoints not all ready 2 minutes after the restart: %v", n, st.Endpoints)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return serve, restored
}
