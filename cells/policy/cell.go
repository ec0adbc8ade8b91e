package policy

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell is the policy engine: it computes every endpoint's policy from the
// rules and identities, into the endpoint-policy table, allocates the
// CIDR identities of rules (ipcache and identities rows), and serves
// POST /v1/policy/trace. Flags: --enable-policy, --allow-localhost.
var Cell = cell.Module(
	"policy",
	"Endpoint policies computed from rules and identities",

	cell.Config(DefaultConfig),
	cell.Provide(
		newEngine,
		newTraceRoutes,
		// Tells regeneration to wait for each endpoint's computed policy.
		func() *tables.PolicyComputed { return &tables.PolicyComputed{} },
	),
	cell.Invoke(func(*controller) {}),
)

type engineParams struct {
	cell.In

	Log    *slog.Logger
	Config Config
	DB     *statedb.DB
	Jobs   job.Group
	Rules  statedb.Table[*tables.PolicyRule]
	// Revision numbers the policy versions (the repository writes it with
	// the rules); while it has no row (an agent whose rules come from
	// elsewhere) the revision is the highest revision of the rules seen.
	Revision   statedb.Table[*tables.PolicyRevision]
	Identities statedb.RWTable[*tables.Identity]
	Endpoints  statedb.Table[*tables.Endpoint]
	IPCache    statedb.RWTable[*tables.IPCacheEntry]
	Policy     statedb.RWTable[*tables.EndpointPolicy]
	// StateDir keeps the CIDR identity numbers across restarts; without
	// one they are numbered afresh at every start.
	StateDir statedir.Dir `optional:"true"`
}

func newEngine(p engineParams) (*controller, error) {
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	c := newController(p.Log, p.Config, p.DB, p.Rules, p.Revision, p.Identities, p.Endpoints, p.IPCache, p.Policy)
	if p.StateDir != (statedir.Dir{}) {
		c.cidr.dir = &p.StateDir
	}
	p.Jobs.Add(job.OneShot("policy-engine", c.run))
	return c, nil
}
