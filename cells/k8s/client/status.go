package client

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"k8s.io/client-go/tools/cache"

	k8sclient "github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// probeInterval is how often the API server is asked whether it is ready;
// probeTimeout how long an answer may take before it counts as down.
const (
	probeInterval = 5 * time.Second
	probeTimeout  = 3 * time.Second
)

// Status writes the k8s-status table: the API server's row, from a probe
// of /readyz, and one row per watched resource, from the watchers of the
// group (Cache). `membrane status` shows the table.
type Status struct {
	db    *statedb.DB
	table statedb.RWTable[*tables.K8sStatus]
}

func newStatus(db *statedb.DB, table statedb.RWTable[*tables.K8sStatus]) *Status {
	return &Status{db: db, table: table}
}

// update applies f to the row name (a new row if there is none) and
// writes it if it changed.
func (s *Status) update(name string, f func(*tables.K8sStatus)) {
	wtxn := s.db.WriteTxn(s.table)
	defer wtxn.Abort()
	row := &tables.K8sStatus{Name: name}
	if old, _, found := s.table.Get(wtxn, tables.K8sStatusNameIndex.Query(name)); found {
		cp := *old
		row = &cp
	}
	before := *row
	f(row)
	if row.OK != before.OK || row.Since.IsZero() {
		row.Since = time.Now()
	}
	if *row == before {
		return
	}
	s.table.Insert(wtxn, row)
	wtxn.Commit()
}

func (s *Status) set(name string, ok bool, detail string, err error) {
	s.update(name, func(row *tables.K8sStatus) {
		row.OK, row.Detail = ok, detail
		if err != nil {
			row.LastError, row.LastErrorAt = err.Error(), time.Now()
		}
	})
}

// Cache reports the state of one watched resource: synced (with what it
// holds) or not yet.
func (s *Status) Cache(resource string, synced bool, detail string) {
	s.set(resource, synced, detail, nil)
}

// Written reports the outcome of the writes to a resource the group
// keeps in the API server: OK with what it holds (detail) while they
// succeed, the error when one fails. (Events stays the count of watch
// events received.)
func (s *Status) Written(resource, detail string, err error) {
	s.set(resource, err == nil, detail, err)
}

// Event counts one watch event (add, update or delete) of a resource.
func (s *Status) Event(resource string) {
	s.update(resource, func(row *tables.K8sStatus) { row.Events++ })
}

// WatchErrors is an informer's watch error handler that records the
// failure in the resource's row (the informer retries by itself) and logs
// it like client-go's default handler does.
func (s *Status) WatchErrors(resource string, log *slog.Logger) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		s.Error(resource, err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

// probe asks the API server whether it is ready, every probeInterval, and
// writes the answer to the api-server row. An unreachable API server does
// not make the agent unhealthy: pods keep their connectivity and policy,
// and a CNI STATUS that failed would stop the runtime from starting pods
// the agent can still serve (those whose Pod and identity it has).
func (s *Status) probe(cs *k8sclient.Clientset, log *slog.Logger) job.OneShotFunc {
	return func(ctx context.Context, health cell.Health) error {
		detail := fmt.Sprintf("%s (node %s)", cs.Server, cs.NodeName)
		reachable := true // log the first failure, then every transition
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		for {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(pctx).Error()
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				err = fmt.Errorf("API server unreachable: %w", err)
			}
			s.set(tables.K8sAPIServer, err == nil, detail, err)
			switch {
			case err != nil && reachable:
				log.Warn("Kubernetes API server unreachable; endpoints keep their policy, changes from the cluster wait", "server", cs.Server, "error", err)
			case err == nil && !reachable:
				log.Info("Kubernetes API server reachable again", "server", cs.Server)
			}
			reachable = err == nil
			if err != nil {
				health.OK("API server unreachable: " + err.Error())
			} else {
				health.OK("connected to " + detail)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}
}

func registerProbe(cs *k8sclient.Clientset, s *Status, jobs job.Group, log *slog.Logger) {
	if !cs.IsEnabled() {
		return
	}
	jobs.Add(job.OneShot("probe-api-server", s.probe(cs, log)))
}

// Error records a problem with one object of a resource (a policy the
// agent refused, say) as the resource's last error, without changing
// whether its cache is synced.
func (s *Status) Error(resource string, err error) {
	s.update(resource, func(row *tables.K8sStatus) {
		row.LastError, row.LastErrorAt = err.Error(), time.Now()
	})
}
