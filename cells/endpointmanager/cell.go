// Package endpointmanager owns the endpoints table: it creates endpoints
// (giving each a node-unique ID in 1..4095), finds them by any of their
// IDs, deletes them, persists them in the state dir and restores them
// after a restart. It also keeps each endpoint's labels in step with its
// pod's row in the pods table.
//
// In the endpoint story it is step 4
// (docs/endpoint-lifecycle.md#4-addendpoint-an-id-and-the-endpoint-exists): the
// endpoint API hands it a new endpoint; from then on the endpoint is
// visible (`membrane endpoint list`, `membrane statedb endpoints`) and the
// identity allocator and regeneration take it from waiting-for-identity
// to ready by reacting to its row.
//
// Reads: pods. Writes: endpoints (creation, deletion, pod labels).
package endpointmanager

import (
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Config of the endpoint manager.
type Config struct {
	// PodMetadataTimeout bounds how long an endpoint waits for its pod's
	// metadata before it is declared invalid.
	PodMetadataTimeout time.Duration
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.Duration("pod-metadata-timeout", def.PodMetadataTimeout,
		"How long an endpoint of a pod the agent does not know waits for the pod's labels before it fails (it never runs under a placeholder identity)")
}

// Cell provides the *EndpointManager.
var Cell = cell.Module(
	"endpoint-manager",
	"Creates and finds and persists and deletes endpoints",

	cell.Config(Config{PodMetadataTimeout: 10 * time.Second}),
	cell.Provide(newEndpointManager),
	cell.Invoke(func(*EndpointManager) {}),
)

type params struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	Jobs      job.Group
	DB        *statedb.DB
	Endpoints statedb.RWTable[*tables.Endpoint]
	Pods      statedb.Table[*tables.Pod]
	StateDir  statedir.Dir
	Config    Config
}

func newEndpointManager(p params) *EndpointManager {
	m := &EndpointManager{log: p.Log, db: p.DB, endpoints: p.Endpoints, ids: newIDAllocator()}
	s := &store{dir: p.StateDir}

	// The table is initialized once the previous run's endpoints are back:
	// until then the identity allocator releases nothing and the datapath
	// reconcilers prune nothing.
	wtxn := p.DB.WriteTxn(p.Endpoints)
	restored := p.Endpoints.RegisterInitializer(wtxn, "endpoint-restore")
	wtxn.Commit()

	p.Lifecycle.Append(cell.Hook{
		// Restore before the API serves, so no new endpoint takes the ID
		// of one being restored.
		OnStart: func(cell.HookContext) error {
			err := m.restore(s)
			m.persist = func() {
				if err := m.save(s); err != nil {
					m.log.Error("saving endpoints failed", "error", err)
				}
			}
			wtxn := p.DB.WriteTxn(p.Endpoints)
			restored(wtxn)
			wtxn.Commit()
			if err != nil {
				m.log.Error("some endpoints could not be restored", "error", err)
			}
			return nil
		},
	})
	p.Jobs.Add(job.OneShot("persist-endpoints", m.persistLoop(s)))
	c := &podLabelsController{m: m, pods: p.Pods, timeout: p.Config.PodMetadataTimeout}
	p.Jobs.Add(job.OneShot("pod-labels", c.run))
	return m
}
