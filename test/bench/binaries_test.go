package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// BenchmarkBinaries measures what the runtime and the operator pay for
// each start of the clients, which link no Kubernetes library
// (internal/importrules checks it): the size of membrane-cni, of the CLI
// and of the agent, and the wall time of starting membrane-cni (CNI
// VERSION, which does no work: the time is the exec and the Go runtime's
// start) against the reference ptp plugin, alternated, and of `membrane
// --help`. The agent's size is shown for scale: it links client-go.
func BenchmarkBinaries(b *testing.B) {
	setup(b)
	bins.Need(b, e2eutil.CLIBin)
	const runs = 200
	ptp := filepath.Join(e2eutil.RefPluginDir, "ptp")

	version := func(bin string) func() error {
		return func() error {
			c := exec.Command(bin)
			c.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
			c.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
			out, err := c.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "supportedVersions") {
				return fmt.Errorf("%s VERSION: %v: %s", bin, err, out)
			}
			return nil
		}
	}
	help := func() error {
		out, err := exec.Command(bins.CLI, "--help").CombinedOutput()
		if err != nil {
			return fmt.Errorf("membrane --help: %v: %s", err, out)
		}
		return nil
	}
	timed := func(f func() error) float64 {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return ms(time.Since(start))
	}
	var cni, ref, cli []float64
	for i := range runs {
		if i%2 == 0 {
			cni = append(cni, timed(version(bins.Plugin)))
			ref = append(ref, timed(version(ptp)))
		} else {
			ref = append(ref, timed(version(ptp)))
			cni = append(cni, timed(version(bins.Plugin)))
		}
		cli = append(cli, timed(help))
	}

	size := func(path string) float64 {
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		return float64(st.Size()) / 1e6
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "binary sizes and start times (%d runs each, membrane-cni and ptp alternated)\n", runs)
	fmt.Fprintf(&sb, "%-34s %-10s %s\n", "binary", "size", "start p50 / p99")
	row := func(name string, mb float64, t []float64) {
		start := "-"
		if t != nil {
			start = fmt.Sprintf("%.2f / %.2f ms", percentile(t, 50), percentile(t, 99))
		}
		fmt.Fprintf(&sb, "%-34s %-10s %s\n", name, fmt.Sprintf("%.2f MB", mb), start)
	}
	row("membrane-cni (CNI VERSION)", size(bins.Plugin), cni)
	row("ptp (CNI VERSION, reference)", size(ptp), ref)
	row("membrane (--help)", size(bins.CLI), cli)
	row("membrane-agent", size(bins.Agent), nil)
	fmt.Fprintf(&sb, "membrane-cni/ptp start ratio: p50 %.2f, p99 %.2f\n",
		percentile(cni, 50)/percentile(ref, 50), percentile(cni, 99)/percentile(ref, 99))
	printResults(b, sb.String())

	b.ReportMetric(size(bins.Plugin), "membrane-cni-MB")
	b.ReportMetric(size(bins.CLI), "membrane-MB")
	b.ReportMetric(size(bins.Agent), "membrane-agent-MB")
	b.ReportMetric(percentile(cni, 50), "membrane-cni-start-p50-ms")
	b.ReportMetric(percentile(ref, 50), "ptp-start-p50-ms")
	b.ReportMetric(percentile(cni, 50)/percentile(ref, 50), "cni-start-ratio")
	b.ReportMetric(percentile(cli, 50), "membrane-help-p50-ms")
}
