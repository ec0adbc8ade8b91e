package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/contrib/grafana"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// The Prometheus test: a real Prometheus server (Debian's package, `make
// deps`) scrapes the agent's --prometheus-serve-addr every second, and
// its query API sees the endpoints move through their states as pods come
// and go, and the drop counter rise when a policy drops traffic. promtool
// checks the agent's exposition, and every metric the Grafana dashboard
// charts must be in it.

// freeLoopbackAddr returns 127.0.0.1:PORT with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// prometheusServer is a prometheus process of the test's own.
type prometheusServer struct {
	addr string
}

// startPrometheus runs prometheus on a loopback port with its own config
// and storage in a temporary directory, scraping target every second, and
// waits until it is ready. It is killed (by PID) when the test ends;
// nothing else is touched (a system service of the package, if any, keeps
// running).
func startPrometheus(t *testing.T, target string) *prometheusServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed: run make deps (Debian package prometheus): %v", err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: membrane-agent
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &prometheusServer{addr: freeLoopbackAddr(t)}
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+s.addr,
		"--web.console.templates="+filepath.Join(dir, "none"),
		"--web.console.libraries="+filepath.Join(dir, "none"),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("prometheus log (last 3000 bytes):\n%s", tail(out, 3000))
		}
	})
	e2eutil.Eventually(t, 60*time.Second, "prometheus to be ready on "+s.addr, func() error {
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited:\n%s", tail(out, 3000))
		default:
		}
		resp, err := http.Get("http://" + s.addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return s
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// query runs an instant query and returns its one sample's value, or
// ok=false when the result is empty.
func (s *prometheusServer) query(t *testing.T, q string) (value float64, ok bool, err error) {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, false, fmt.Errorf("query %s: %w", q, err)
	}
	if out.Status != "success" {
		return 0, false, fmt.Errorf("query %s: %s", q, out.Error)
	}
	switch len(out.Data.Result) {
	case 0:
		return 0, false, nil
	case 1:
	default:
		return 0, false, fmt.Errorf("query %s: %d series, want one (aggregate it)", q, len(out.Data.Result))
	}
	str, _ := out.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	return v, true, err
}

// waitValue waits until q's one sample satisfies cond.
func (s *prometheusServer) waitValue(t *testing.T, q, want string, cond func(float64) bool) float64 {
	t.Helper()
	var got float64
	e2eutil.Eventually(t, 60*time.Second, fmt.Sprintf("Prometheus: %s %s", q, want), func() error {
		v, ok, err := s.query(t, q)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no sample yet")
		}
		if !cond(v) {
			return fmt.Errorf("value %v", v)
		}
		got = v
		return nil
	})
	return got
}

// scrapeAgent fetches the agent's exposition.
func scrapeAgent(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape the agent: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape the agent: status %d, %v: %s", resp.StatusCode, err, tail(body, 500))
	}
	return body
}

func TestMetricsPrometheus(t *testing.T) {
	setup(t)
	metricsAddr := freeLoopbackAddr(t)
	a := startAgent(t, agentOpts{Extra: []string{"--prometheus-serve-addr", metricsAddr}})
	n := newNetwork(t, a, "", nil)
	prom := startPrometheus(t, metricsAddr)

	ready := `sum(membrane_endpoints{state="ready"})`
	prom.waitValue(t, ready, "== 0 (no pod yet)", func(v float64) bool { return v == 0 })

	mk := func(name, app string) *pod {
		a.putPod("default", name, map[string]string{"app": app})
		p := newPod(t, "default", name)
		if err := n.add(p); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		return p
	}
	web, other := mk("web", "web"), mk("other", "other")
	startServer(t, web, "8080")
	prom.waitValue(t, ready, "== 2 (two pods)", func(v float64) bool { return v == 2 })
	prom.waitValue(t, `sum(membrane_endpoints)`, "== 2", func(v float64) bool { return v == 2 })

	t.Run("promtool check metrics", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Fatalf("promtool is not installed: run make deps (Debian package prometheus): %v", err)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(scrapeAgent(t, metricsAddr))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	// A policy that lets only app=client into web: other's connection is
	// dropped (reason policy-denied, ingress into web).
	drops := `sum(membrane_drop_count_total{reason="policy-denied",direction="ingress"}) or vector(0)`
	before := prom.waitValue(t, drops, "to have a value", func(float64) bool { return true })
	if !canTCP(other, web.IP().String(), "8080") {
		t.Fatalf("other->web:8080 dropped before any policy")
	}
	var imp struct {
		Revision uint64 `json:"revision"`
	}
	doc := `[{"endpointSelector":{"matchLabels":{"app":"web"}},
	  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}]`
	if err := a.Client.DoRaw(ctxT(t), http.MethodPut, "/v1/policy", "application/json", []byte(doc), &imp); err != nil {
		t.Fatalf("import policy: %v", err)
	}
	prom.waitValue(t, `membrane_policy_revision`, fmt.Sprintf(">= %d", imp.Revision), func(v float64) bool { return v >= float64(imp.Revision) })
	prom.waitValue(t, `sum(membrane_policy_imports_total{source="api"})`, ">= 1", func(v float64) bool { return v >= 1 })
	e2eutil.Eventually(t, 30*time.Second, "web to enforce the policy", func() error {
		for _, ep := range a.Endpoints() {
			if ep.PolicyRevision < imp.Revision {
				return fmt.Errorf("endpoint %d at revision %d", ep.ID, ep.PolicyRevision)
			}
		}
		return nil
	})
	if canTCP(other, web.IP().String(), "8080") {
		t.Fatalf("other->web:8080 passed under a policy that allows only app=client")
	}
	prom.waitValue(t, drops, fmt.Sprintf("> %v (other->web dropped)", before), func(v float64) bool { return v > before })

	// The dashboard charts only what the agent exports (after the drop,
	// so the drop counters are in the exposition too).
	t.Run("dashboard metrics are exported", func(t *testing.T) {
		exported := exportedFamilies(scrapeAgent(t, metricsAddr))
		charted, err := grafana.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range charted {
			if !exported[m] {
				t.Errorf("contrib/grafana/membrane.json charts %s, which the agent does not export", m)
			}
		}
	})

	// A pod goes: one ready endpoint left.
	if err := n.del(other); err != nil {
		t.Fatalf("DEL other: %v", err)
	}
	prom.waitValue(t, ready, "== 1 (one pod deleted)", func(v float64) bool { return v == 1 })
	prom.waitValue(t, `sum(membrane_api_requests_total{route=~"DELETE /v1/endpoint.*",code=~"2.."}) or vector(0)`,
		">= 1", func(v float64) bool { return v >= 1 })
}

// exportedFamilies lists the metric names of an exposition, with the
// _bucket/_sum/_count series of histograms and summaries.
func exportedFamilies(exposition []byte) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(exposition), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		out[name] = true
	}
	return out
}
