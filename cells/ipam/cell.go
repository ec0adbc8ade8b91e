package ipam

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell provides *IPAM and the /v1/ipam routes.
var Cell = cell.Module(
	"ipam",
	"Pod IP address management from the node pod CIDR",

	cell.Config(DefaultConfig),
	cell.Provide(newFromHive, newRoutes),
	cell.Invoke(func(*IPAM) {}),
)

type params struct {
	cell.In

	Lifecycle cell.Lifecycle
	Log       *slog.Logger
	Health    cell.Health
	DB        *statedb.DB
	Table     statedb.RWTable[*tables.IPAMAllocation]
	Endpoints statedb.Table[*tables.Endpoint]
	Jobs      job.Group
	Dir       statedir.Dir
	Config    Config
	// Source is there in Kubernetes mode with --ipam=kubernetes.
	Source PodCIDRSource `optional:"true"`
}

func newFromHive(p params) (*IPAM, error) {
	m, err := newIPAM(p.Log, p.DB, p.Table, p.Dir, p.Config, p.Source)
	if err != nil {
		return nil, err
	}
	// The API server's routes depend on *IPAM, so this hook runs before the
	// socket opens: no request sees an IPAM that has not loaded its state.
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(ctx cell.HookContext) error {
			if err := m.resolve(ctx); err != nil {
				p.Health.Degraded("no pod CIDRs", err)
				return err
			}
			loaded, outside, err := m.start()
			if err != nil {
				p.Health.Degraded("restoring allocations failed", err)
				return err
			}
			p.Log.Info("IPAM ready", "cidrs", m.cidrs(), "restored", loaded,
				"outside-cidrs", outside, "state-file", p.Dir.Path(stateFileName))
			status := fmt.Sprintf("allocating from %s, %d allocations restored", strings.Join(m.cidrs(), " and "), loaded)
			if outside > 0 {
				status += fmt.Sprintf(", %d outside the pod CIDRs (see the agent log)", outside)
			}
			p.Health.OK(status)
			return nil
		},
		OnStop: func(cell.HookContext) error {
			m.stop()
			return nil
		},
	})
	r := &reclaimer{m: m, endpoints: p.Endpoints, grace: ReclaimGrace, health: p.Health.NewScope("reclaim-leaked")}
	p.Jobs.Add(job.OneShot("reclaim-leaked", r.run))
	return m, nil
}
