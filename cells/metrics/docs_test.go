package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb/reconciler"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/membrane-net/membrane/contrib/grafana"
	"github.com/membrane-net/membrane/internal/celltest"
)

// defined returns the names of every metric the cell defines, from the
// collectors' descriptions (present whether or not a series has a value
// yet, and without a datapath). The reconcilers' metrics are made for the
// first reconciler: the test asks for them.
func defined(t *testing.T) []string {
	t.Helper()
	var reg *Registry
	h := celltest.New(t, "", Cell, cell.Invoke(func(r *Registry, _ reconciler.Metrics) { reg = r }))
	hive.AddConfigOverride(h.Hive, func(c *Config) { c.PrometheusServeAddr = "unix:" + t.TempDir() + "/m.sock" })
	h.StartTest()
	descs := make(chan *prometheus.Desc, 1024)
	for _, c := range reg.collectors {
		c.Describe(descs)
	}
	close(descs)
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range descs {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// docs/metrics.md describes every membrane_ metric the agent defines, in
// a table row of its own (| `name` | ...).
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range defined(t) {
		if strings.HasPrefix(name, "membrane_") && !strings.Contains(string(doc), "| `"+name+"`") {
			t.Errorf("docs/metrics.md has no row for %s", name)
		}
	}
}

// Every metric the Grafana dashboard charts is one the agent defines
// (the e2e suite checks it against a live scrape too).
func TestDashboardChartsDefinedMetrics(t *testing.T) {
	charted, err := grafana.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	names := defined(t)
	for _, m := range charted {
		base := m
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && slices.Contains(names, b) {
				base = b
			}
		}
		if !slices.Contains(names, base) {
			t.Errorf("contrib/grafana/membrane.json charts %s, which the agent does not define", m)
		}
	}
}
