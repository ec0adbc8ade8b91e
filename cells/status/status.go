// Package status answers GET /v1/healthz (the agent's version, uptime,
// endpoints by state and the health each cell last reported; what
// `membrane status` and the CNI plugin's STATUS read), GET /v1/config
// (every flag's effective value), GET /v1/debug/runtime (the process's
// goroutines, threads, open files and memory, for leak checks) and
// GET /v1/debug/heap (the Go heap profile, for what holds the memory).
//
// Try it: curl --unix-socket /var/run/membrane/membrane.sock http://x/v1/debug/runtime
package status

import (
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/health"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Flags are the agent's parsed flags, provided by main (optional).
type Flags struct{ *pflag.FlagSet }

// Cell serves the status routes.
var Cell = cell.Module(
	"status",
	"Agent status and configuration API",
	cell.Provide(newRoutes),
)

type params struct {
	cell.In

	DB        *statedb.DB
	Endpoints statedb.Table[*tables.Endpoint]
	K8s       statedb.Table[*tables.K8sStatus]
	Health    *health.Registry
	Flags     Flags `optional:"true"`
}

func newRoutes(p params) apiserver.RoutesOut {
	start := time.Now()
	healthz := func(w http.ResponseWriter, r *http.Request) (any, int, error) {
		s := &models.Status{
			Version:   Version,
			Uptime:    time.Since(start).Round(time.Second).String(),
			Healthy:   true,
			Endpoints: map[string]int{},
			Modules:   map[string]string{},
		}
		txn := p.DB.ReadTxn()
		s.Kubernetes = kubernetesStatus(txn, p.K8s)
		for ep := range p.Endpoints.All(txn) {
			s.Endpoints[string(ep.State)]++
		}
		for name, rep := range p.Health.Snapshot() {
			if name == "" {
				continue
			}
			s.Modules[name] = rep.String()
			if rep.Level == cell.StatusDegraded {
				s.Healthy = false
				s.Message = fmt.Sprintf("%s degraded", name)
			}
		}
		return s, http.StatusOK, nil
	}
	config := func(w http.ResponseWriter, r *http.Request) (any, int, error) {
		out := map[string]string{}
		if p.Flags.FlagSet != nil {
			p.Flags.VisitAll(func(f *pflag.Flag) { out[f.Name] = f.Value.String() })
		}
		return maps.Clone(out), http.StatusOK, nil
	}
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/healthz", Handler: apiserver.Handle(healthz)},
		{Pattern: "GET /v1/config", Handler: apiserver.Handle(config)},
		{Pattern: "GET /v1/debug/runtime", Handler: apiserver.Handle(runtimeCounts)},
		{Pattern: "GET /v1/debug/heap", Handler: http.HandlerFunc(heapProfile)},
	}}
}

// kubernetesStatus is the k8s-status table as the API shows it; nil when
// the agent is not in Kubernetes mode (no api-server row).
func kubernetesStatus(txn statedb.ReadTxn, table statedb.Table[*tables.K8sStatus]) *models.KubernetesStatus {
	srv, _, found := table.Get(txn, tables.K8sStatusNameIndex.Query(tables.K8sAPIServer))
	if !found {
		return nil
	}
	out := &models.KubernetesStatus{
		Server: srv.Detail, Reachable: srv.OK, Since: srv.Since,
		LastError: srv.LastError, LastErrorAt: srv.LastErrorAt,
	}
	for row := range table.All(txn) {
		if row.Name == tables.K8sAPIServer {
			continue
		}
		out.Caches = append(out.Caches, models.KubernetesCache{
			Name: row.Name, Synced: row.OK, Detail: row.Detail,
			LastError: row.LastError, LastErrorAt: row.LastErrorAt, Events: row.Events,
		})
	}
	return out
}
