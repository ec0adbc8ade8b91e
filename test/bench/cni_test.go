package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// BenchmarkCNIAddDel times `cnitool add` and `cnitool del` with
// membrane-cni (a real membrane-agent running) against the reference ptp +
// host-local plugins, in the same run.
//
// Sequential: N pods per plugin (MEMBRANE_BENCH_PODS, default 100) are
// added one after the other, then deleted one after the other; the two
// plugins alternate pod by pod (and which goes first alternates too) so
// that machine drift hits both equally. Every pod's netns exists, and
// every membrane pod's labels are registered, before the clock starts: the
// time is what a runtime waits for the CNI call, cnitool's own start
// included. Parallel: MEMBRANE_BENCH_PARALLEL (default 100) ADDs started
// at once, then as many DELs, makespan, three rounds per plugin in the
// order m p p m m p, median.
//
// MEMBRANE_BENCH_DATAPATH_MODE=tc|tcx|auto (default tc, the agent's
// default) picks how the agent attaches its programs: a tcx link costs an
// RCU grace period under the RTNL lock, which dominates ADD here
// (docs/datapath.md).
func BenchmarkCNIAddDel(b *testing.B) {
	setup(b)
	n := envInt("MEMBRANE_BENCH_PODS", 100)
	parallel := envInt("MEMBRANE_BENCH_PARALLEL", 100)
	const rounds = 3
	mode := os.Getenv("MEMBRANE_BENCH_DATAPATH_MODE")
	if mode == "" {
		mode = "tc"
	}

	a := startAgent(b, "--datapath-mode", mode)
	nets := []*network{membraneNetwork(b, a), ptpNetwork(b)}
	pods := make([][]*pod, len(nets))
	for i, nw := range nets {
		for j := range n {
			name := fmt.Sprintf("%s-%d", nw.Plugin, j)
			pods[i] = append(pods[i], newPod(b, name))
			if nw.Plugin == "membrane" {
				a.putPod("default", name, map[string]string{"app": "bench", "idx": fmt.Sprint(j % 10)})
			}
		}
	}

	type samples struct{ add, del []float64 }
	seq := make([]samples, len(nets))
	order := func(j int) []int {
		if j%2 == 0 {
			return []int{0, 1}
		}
		return []int{1, 0}
	}
	for j := range n {
		for _, i := range order(j) {
			d, err := nets[i].add(pods[i][j])
			if err != nil {
				b.Fatal(err)
			}
			seq[i].add = append(seq[i].add, ms(d))
		}
	}
	for j := range n {
		for _, i := range order(j) {
			d, err := nets[i].del(pods[i][j])
			if err != nil {
				b.Fatal(err)
			}
			seq[i].del = append(seq[i].del, ms(d))
		}
	}
	for i := range nets {
		for _, p := range pods[i] {
			p.remove()
		}
	}

	// parallel ADDs at once, then as many DELs: makespan.
	par := make([]samples, len(nets))
	for r := range rounds {
		for _, i := range order(r) {
			nw := nets[i]
			ps := make([]*pod, parallel)
			for k := range ps {
				name := fmt.Sprintf("%s-par%d-%d", nw.Plugin, r, k)
				ps[k] = newPod(b, name)
				if nw.Plugin == "membrane" {
					a.putPod("default", name, map[string]string{"app": "bench-par"})
				}
			}
			for _, op := range []string{"add", "del"} {
				d, err := makespan(ps, func(p *pod) error {
					var err error
					if op == "add" {
						_, err = nw.add(p)
					} else {
						_, err = nw.del(p)
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if op == "add" {
					par[i].add = append(par[i].add, ms(d))
				} else {
					par[i].del = append(par[i].del, ms(d))
				}
			}
			for _, p := range ps {
				p.remove()
			}
		}
	}

	m, p := seq[0], seq[1]
	type row struct {
		op       string
		m50, m99 float64
		p50, p99 float64
		single   bool // one number (a median of makespans), no p99
	}
	rows := []row{
		{"sequential ADD", percentile(m.add, 50), percentile(m.add, 99), percentile(p.add, 50), percentile(p.add, 99), false},
		{"sequential DEL", percentile(m.del, 50), percentile(m.del, 99), percentile(p.del, 50), percentile(p.del, 99), false},
		{fmt.Sprintf("%d parallel ADD, makespan", parallel), median(par[0].add), 0, median(par[1].add), 0, true},
		{fmt.Sprintf("%d parallel DEL, makespan", parallel), median(par[0].del), 0, median(par[1].del), 0, true},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "cnitool ADD/DEL, membrane-cni (agent running, --datapath-mode=%s) vs ptp+host-local (%s), same run\n", mode, e2eutil.RefPluginDir)
	fmt.Fprintf(&sb, "sequential: %d pods per plugin, plugins alternated pod by pod; parallel: median of %d rounds\n", n, rounds)
	fmt.Fprintf(&sb, "%-28s %-22s %-22s %s\n", "op", "membrane p50 / p99", "ptp p50 / p99", "ratio membrane/ptp")
	for _, r := range rows {
		if r.single {
			fmt.Fprintf(&sb, "%-28s %-22s %-22s %.2f\n", r.op,
				fmt.Sprintf("%.1f ms", r.m50), fmt.Sprintf("%.1f ms", r.p50), r.m50/r.p50)
			continue
		}
		fmt.Fprintf(&sb, "%-28s %-22s %-22s %.2f / %.2f\n", r.op,
			fmt.Sprintf("%.1f / %.1f ms", r.m50, r.m99), fmt.Sprintf("%.1f / %.1f ms", r.p50, r.p99),
			r.m50/r.p50, r.m99/r.p99)
	}
	if n < 100 {
		fmt.Fprintf(&sb, "(p99 is the nearest rank of %d samples: the maximum)", n)
	} else {
		fmt.Fprintf(&sb, "(p99 is the nearest rank of %d samples)", n)
	}
	printResults(b, sb.String())

	for _, x := range []struct {
		name         string
		mVal, refVal float64
	}{
		{"add-p50", rows[0].m50, rows[0].p50},
		{"add-p99", rows[0].m99, rows[0].p99},
		{"del-p50", rows[1].m50, rows[1].p50},
		{"del-p99", rows[1].m99, rows[1].p99},
		{"par-add", rows[2].m50, rows[2].p50},
		{"par-del", rows[3].m50, rows[3].p50},
	} {
		b.ReportMetric(x.mVal, "membrane-"+x.name+"-ms")
		b.ReportMetric(x.refVal, "ptp-"+x.name+"-ms")
		b.ReportMetric(x.mVal/x.refVal, x.name+"-ratio")
	}
}
