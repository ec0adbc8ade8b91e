// Package endpointmanager owns the endpoints table: it creates endpoints
// (rejecting duplicates, giving each a node-unique ID in 1..4095),
// deletes them, persists them in the state dir and restores them after a
// restart. It also gives each endpoint its pod's labels, at creation and
// whenever the pod's row in the pods table changes.
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
	"Creates and persists and deletes endpoints",

	cell.Config(Config{PodMetadataTimeout: 10 * time.Second}),
	cell.Provide(newEndpointManager),
	cell.Invoke(func(*EndpointManager) {}),
)

type params struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	Jobs      job.Group
	Health    cell.Health
	DB        *statedb.DB
	Endpoints statedb.RWTable[*tables.Endpoint]
	Pods      statedb.Table[*tables.Pod]
	StateDir  statedir.Dir
	Config    Config
}

func newEndpointManager(p params) *EndpointManager {
	m := &EndpointManager{log: p.Log, db: p.DB, endpoints: p.Endpoints, pods: p.Pods, ids: newIDAllocator()}
	m.persister = newPersister(m, p.StateDir, p.Health.NewScope("persist-endpoints"))
	restoreHealth := p.Health.NewScope("restore-endpoints")

	// The table is initialized once the previous run's endpoints are back:
	// until then the identity allocator releases nothing and the datapath
	// reconcilers prune nothing.
	wtxn := p.DB.WriteTxn(p.Endpoints)
	restored := p.Endpoints.RegisterInitializer(wtxn, "endpoint-restore")
	wtxn.Commit()

	var stopPersister func()
	p.Lifecycle.Append(cell.Hook{
		// Restore before the API serves, so no new endpoint takes the ID
		// of one being restored.
		// A state file that cannot be read stops the agent, as every
		// state file does: starting would overwrite it and lose the pods'
		// endpoints while reporting healthy. An endpoint that cannot be
		// restored leaves the agent degraded until restarted.
		OnStart: func(cell.HookContext) error {
			lost, err := m.restore(p.StateDir)
			if err != nil {
				return err
			}
			if lost != nil {
				m.log.Error("some endpoints could not be restored", "error", lost)
				restoreHealth.Degraded("some endpoints of the previous run could not be restored", lost)
			} else {
				restoreHealth.OK("endpoints restored")
			}
			if stopPersister, err = m.persister.start(); err != nil {
				return err
			}
			wtxn := p.DB.WriteTxn(p.Endpoints)
			restored(wtxn)
			wtxn.Commit()
			return nil
		},
		// After the API server's stop hook: see persister.
		OnStop: func(cell.HookContext) error {
			if stopPersister != nil {
				stopPersister()
			}
			return nil
		},
	})
	c := &podLabelsController{m: m, timeout: p.Config.PodMetadataTimeout}
	p.Jobs.Add(job.OneShot("pod-labels", c.run))
	return m
}
