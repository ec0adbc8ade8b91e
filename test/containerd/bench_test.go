package containerd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// BenchmarkRunPodSandbox times RunPodSandbox through containerd's CRI with
// Membrane (agent running, the conflist it wrote) against the reference
// ptp + host-local plugins, under the same containerd in the same run: the
// ptp network is a second runtime handler of that containerd with its own
// CNI conf dir, so everything but the CNI plugin is shared.
//
// Each plugin first makes and removes one sandbox that is not measured:
// containerd's first sandbox of a run pays for cold caches (the pause
// image's snapshot and the like), which would land on whichever plugin
// went first.
//
// Sequential: N sandboxes per plugin (MEMBRANE_BENCH_SANDBOXES, default
// 20), alternating plugin by plugin (and which goes first alternates);
// each sandbox stays up until all are made, as pods on a node do; every
// Membrane pod's labels are registered before the clock starts. Then each
// is stopped and removed, also timed. Concurrent: 20 RunPodSandbox at once,
// makespan, three rounds per plugin in the order m p p m m p, median.
// The time is what kubelet waits for: the CRI call, which includes the
// netns, the CNI ADDs (containerd's loopback, then the network) and
// starting the pause container.
func BenchmarkRunPodSandbox(b *testing.B) {
	b.ReportMetric(0, "ns/op") // one measurement per run; b.N is ignored
	n := 20
	if v, err := strconv.Atoi(os.Getenv("MEMBRANE_BENCH_SANDBOXES")); err == nil && v > 0 {
		n = v
	}
	const parallel, rounds = 20, 3

	e := newEnv(b, envOpts{Handlers: func(e *env) map[string][]byte {
		return map[string][]byte{"ptp": ptpConflist(b, filepath.Join(e.Dir, "ptp-ipam"))}
	}})
	plugins := []string{"membrane", "ptp"}
	seq := 0
	newPod := func(plugin, name string) *pod {
		seq++
		if plugin == "membrane" {
			// Four label sets: new pods mostly reuse an identity, as
			// replicas do.
			return e.newPod("bench", name, map[string]string{"app": "bench", "shard": fmt.Sprint(seq % 4)})
		}
		p := e.newPodUnregistered("bench", name)
		p.Handler = "ptp"
		return p
	}
	order := func(i int) []int {
		if i%2 == 0 {
			return []int{0, 1}
		}
		return []int{1, 0}
	}
	teardown := func(p *pod) (time.Duration, error) {
		start := time.Now()
		if err := e.stop(ctxT(b), p); err != nil {
			return 0, err
		}
		if err := e.remove(ctxT(b), p); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}

	type samples struct{ run, down, parRun, parDown []float64 }
	res := make([]samples, len(plugins))
	pods := make([][]*pod, len(plugins))
	for i := range plugins {
		warm := newPod(plugins[i], plugins[i]+"-warmup")
		if _, err := e.run(ctxT(b), warm); err != nil {
			b.Fatalf("%s warm-up: %v", plugins[i], err)
		}
		if _, err := teardown(warm); err != nil {
			b.Fatalf("%s warm-up: %v", plugins[i], err)
		}
		for j := range n {
			pods[i] = append(pods[i], newPod(plugins[i], fmt.Sprintf("%s-%d", plugins[i], j)))
		}
	}
	for j := range n {
		for _, i := range order(j) {
			d, err := e.run(ctxT(b), pods[i][j])
			if err != nil {
				b.Fatalf("%s: %v", plugins[i], err)
			}
			res[i].run = append(res[i].run, ms(d))
		}
	}
	for j := range n {
		for _, i := range order(j) {
			d, err := teardown(pods[i][j])
			if err != nil {
				b.Fatalf("%s: %v", plugins[i], err)
			}
			res[i].down = append(res[i].down, ms(d))
		}
	}

	for r := range rounds {
		for _, i := range order(r) {
			ps := make([]*pod, parallel)
			for k := range ps {
				ps[k] = newPod(plugins[i], fmt.Sprintf("%s-par%d-%d", plugins[i], r, k))
			}
			d, err := makespan(ps, func(p *pod) error { _, err := e.run(ctxT(b), p); return err })
			if err != nil {
				b.Fatalf("%s: %v", plugins[i], err)
			}
			res[i].parRun = append(res[i].parRun, ms(d))
			d, err = makespan(ps, func(p *pod) error { _, err := teardown(p); return err })
			if err != nil {
				b.Fatalf("%s: %v", plugins[i], err)
			}
			res[i].parDown = append(res[i].parDown, ms(d))
		}
	}

	m, p := res[0], res[1]
	var sb strings.Builder
	fmt.Fprintf(&sb, "RunPodSandbox through containerd's CRI (%s), membrane-cni (agent running) vs ptp+host-local (%s), same containerd, same run\n",
		e.Ctrd.version(), e2eutil.RefPluginDir)
	fmt.Fprintf(&sb, "sequential: %d sandboxes per plugin, alternated; concurrent: %d at once, median of %d rounds\n", n, parallel, rounds)
	fmt.Fprintf(&sb, "%-36s %-22s %-22s %s\n", "op", "membrane p50 / p99", "ptp p50 / p99", "ratio membrane/ptp")
	row := func(op string, ms, ps []float64) {
		fmt.Fprintf(&sb, "%-36s %-22s %-22s %.2f / %.2f\n", op,
			fmt.Sprintf("%.1f / %.1f ms", percentile(ms, 50), percentile(ms, 99)),
			fmt.Sprintf("%.1f / %.1f ms", percentile(ps, 50), percentile(ps, 99)),
			percentile(ms, 50)/percentile(ps, 50), percentile(ms, 99)/percentile(ps, 99))
	}
	single := func(op string, ms, ps []float64) {
		fmt.Fprintf(&sb, "%-36s %-22s %-22s %.2f\n", op,
			fmt.Sprintf("%.0f ms", median(ms)), fmt.Sprintf("%.0f ms", median(ps)), median(ms)/median(ps))
	}
	row("sequential RunPodSandbox", m.run, p.run)
	row("sequential Stop+RemovePodSandbox", m.down, p.down)
	single(fmt.Sprintf("%d concurrent RunPodSandbox, makespan", parallel), m.parRun, p.parRun)
	single(fmt.Sprintf("%d concurrent Stop+Remove, makespan", parallel), m.parDown, p.parDown)
	fmt.Fprintf(&sb, "(p99 is the nearest rank of %d samples", n)
	if n < 100 {
		sb.WriteString(": the maximum")
	}
	sb.WriteString(")")
	fmt.Printf("\n--- %s\n%s\n\n", b.Name(), sb.String())

	for _, x := range []struct {
		name string
		m, p float64
	}{
		{"run-p50", percentile(m.run, 50), percentile(p.run, 50)},
		{"run-p99", percentile(m.run, 99), percentile(p.run, 99)},
		{"par20-run", median(m.parRun), median(p.parRun)},
	} {
		b.ReportMetric(x.m, "membrane-"+x.name+"-ms")
		b.ReportMetric(x.p, "ptp-"+x.name+"-ms")
		b.ReportMetric(x.m/x.p, x.name+"-ratio")
	}
}

// ptpConflist is the reference network: ptp with host-local IPAM on a free
// /24, its state under dataDir.
func ptpConflist(tb testing.TB, dataDir string) []byte {
	conf, _ := json.Marshal(e2eutil.PTPConflist("ptp-reference", e2eutil.FreePodCIDR(tb, e2eutil.PoolContainerd, 24), dataDir))
	return conf
}

// The statistics and the makespan, shared with the benchmarks of
// test/bench.
var (
	percentile = e2eutil.Percentile
	median     = e2eutil.Median
	ms         = e2eutil.Ms
	makespan   = e2eutil.Makespan[*pod]
)
