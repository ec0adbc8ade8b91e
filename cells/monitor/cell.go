package monitor

import (
	"context"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell provides the *Monitor, its reader job and GET /v1/monitor. It needs
// the datapath's maps.EventMaps, which the loader provides (the maps exist
// once the loader has started).
var Cell = cell.Module(
	"monitor",
	"Datapath drop and verdict events streamed to membrane monitor",

	cell.Provide(newMonitor, newRoutes),
)

type params struct {
	cell.In

	Lifecycle  cell.Lifecycle
	Log        *slog.Logger
	Jobs       job.Group
	DB         *statedb.DB
	Endpoints  statedb.Table[*tables.Endpoint]
	Identities statedb.Table[*tables.Identity]
	Datapath   maps.EventMaps
}

func newMonitor(p params) *Monitor {
	m := New(p.Log, p.DB, p.Endpoints, p.Identities)
	p.Lifecycle.Append(cell.Hook{
		// The reader is added once the hive runs (after the loader's start
		// hook created the maps). A job added then is stopped before every
		// other hook, so open streams end before the API server waits for
		// its connections to close.
		OnStart: func(cell.HookContext) error {
			p.Jobs.Add(job.OneShot("read-events", func(ctx context.Context, h cell.Health) error {
				h.OK("reading datapath events")
				return m.Run(ctx, p.Datapath.EventsMap())
			}))
			return nil
		},
	})
	return m
}
