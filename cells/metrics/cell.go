// Package metrics serves the agent's Prometheus metrics at /metrics on
// --prometheus-serve-addr (off by default): a loopback or explicit
// host:port, or unix:/path for a unix socket; a wildcard address is
// refused, so the metrics are never served to the world by accident.
//
// It keeps a registry of its own (never Prometheus's global one) with:
//   - what the cells record as they work, from the metrics library
//     (github.com/membrane-net/membrane/metrics): API requests and the
//     rate limiter, regeneration, policy imports, the hive's start/stop;
//   - what it computes on each scrape, so nothing polls in between: the
//     endpoints by state and the identities by kind (from the endpoints
//     and identities tables), the policy revision and rules, and the
//     datapath's forward and drop counters summed from the per-CPU
//     metrics map (mb_metrics, what `membrane bpf metrics` prints);
//   - statedb's and the reconcilers' own metrics: it provides the
//     implementations of their Metrics interfaces that the database and
//     every reconciler pick up from the hive;
//   - the Go runtime's and the process's (go_*, process_*).
//
// Reads: endpoints, identities, policy-revision, policy-rules (on scrape).
// Writes: none. docs/metrics.md lists every metric.
//
// See it working:
//
//	membrane-agent --prometheus-serve-addr 127.0.0.1:9962 ...
//	curl -s 127.0.0.1:9962/metrics | grep '^membrane_endpoints'
//	promtool check metrics < <(curl -s 127.0.0.1:9962/metrics)
package metrics

import (
	"errors"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/datapath/maps"
	agentmetrics "github.com/membrane-net/membrane/metrics"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Config of the metrics server.
type Config struct {
	PrometheusServeAddr string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("prometheus-serve-addr", def.PrometheusServeAddr,
		"Serve Prometheus metrics at /metrics on this address: host:port on a loopback or "+
			"explicit address (e.g. 127.0.0.1:9962), or unix:/path for a unix socket (mode 0660); empty serves none")
}

// Cell serves the metrics.
var Cell = cell.Module(
	"metrics",
	"Prometheus metrics of the agent",

	cell.Config(Config{}),
	cell.Provide(newRegistry, newStateDBMetrics, newReconcilerMetrics),
	cell.Invoke(serve),
)

// Registry is the cell's Prometheus registry; nil Reg when metrics are
// off, and then nothing is registered or computed.
type Registry struct {
	Reg *prometheus.Registry
	// every collector registered, for Describe (the docs test)
	collectors []prometheus.Collector
}

func (r *Registry) register(cs ...prometheus.Collector) {
	r.Reg.MustRegister(cs...)
	r.collectors = append(r.collectors, cs...)
}

func newRegistry(cfg Config) (*Registry, error) {
	if cfg.PrometheusServeAddr == "" {
		return &Registry{}, nil
	}
	if _, _, err := parseAddr(cfg.PrometheusServeAddr); err != nil {
		return nil, err
	}
	r := &Registry{Reg: prometheus.NewRegistry()}
	r.register(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	r.register(agentmetrics.Collectors()...)
	for _, src := range []string{tables.PolicySourceAPI, tables.PolicySourceK8s} {
		// Series from the start, so a dashboard shows 0 rather than nothing.
		agentmetrics.PolicyImports.WithLabelValues(src)
		agentmetrics.PolicyImportErrors.WithLabelValues(src)
	}
	return r, nil
}

type serveParams struct {
	cell.In

	Lifecycle  cell.Lifecycle
	Log        *slog.Logger
	Config     Config
	Registry   *Registry
	DB         *statedb.DB
	Endpoints  statedb.Table[*tables.Endpoint]
	Identities statedb.Table[*tables.Identity]
	Revisions  statedb.Table[*tables.PolicyRevision]
	Rules      statedb.Table[*tables.PolicyRule]
	// Absent in an agent without the loader: no datapath counters then.
	Datapath maps.EventMaps `optional:"true"`
}

func serve(p serveParams) {
	if p.Registry.Reg == nil {
		return
	}
	p.Registry.register(
		&tablesCollector{db: p.DB, endpoints: p.Endpoints, identities: p.Identities, revisions: p.Revisions, rules: p.Rules},
		&datapathCollector{maps: p.Datapath, log: p.Log},
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.Registry.Reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(p.Log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      p.Registry.Reg, // promhttp_metric_handler_errors_total
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			ln, err := listen(p.Config.PrometheusServeAddr)
			if err != nil {
				return err
			}
			p.Log.Info("serving Prometheus metrics", "address", ln.Addr().String(), "path", "/metrics")
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					p.Log.Error("metrics server failed", "error", err)
				}
			}()
			return nil
		},
		OnStop: func(ctx cell.HookContext) error {
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
			if network, path, _ := parseAddr(p.Config.PrometheusServeAddr); network == "unix" {
				os.Remove(path)
			}
			return nil
		},
	})
}
