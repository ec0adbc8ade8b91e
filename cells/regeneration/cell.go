// Package regeneration brings endpoints' datapath in step with their rows:
// for an endpoint in waiting-to-regenerate it writes the datapath rows
// derived from it (an ipcache entry per address, IP -> identity; its
// bpf-endpoints entry, host ifindex -> endpoint and the directions its
// policy enforces), moves it to regenerating, and to ready once the
// loader's reconcilers report every row Done — its endpoint-policy row
// (computed by the policy engine for its current identity) included —
// i.e. once the kernel enforces its identity and policy — and every older
// endpoint-policy row (the peers' rows that learned its identity) is in
// the kernel too. A relabelled endpoint's addresses switch identity only
// then as well. When an endpoint goes away its rows go too.
//
// Nothing calls "regenerate": it happens because a row changed. The
// identity allocator moves an endpoint to waiting-to-regenerate after its
// labels changed; a new endpoint-policy row for a ready endpoint (a policy
// imported, an identity appearing that one of its selectors matches) does
// the same here.
//
// In the endpoint story this is steps 7 and 8
// (docs/endpoint-lifecycle.md#7-regeneration). Try it: membrane endpoint
// log ID.
//
// Reads: endpoints, endpoint-policy, ipcache, bpf-endpoints. Writes:
// ipcache, bpf-endpoints, endpoints (state regenerating/ready, policy
// revision).
package regeneration

import (
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell runs the regeneration controller.
var Cell = cell.Module(
	"regeneration",
	"Derives datapath rows from endpoints and reports them ready",

	cell.Invoke(register),
)

type params struct {
	cell.In

	Log       *slog.Logger
	Jobs      job.Group
	DB        *statedb.DB
	Endpoints statedb.RWTable[*tables.Endpoint]
	IPCache   statedb.RWTable[*tables.IPCacheEntry]
	EPMap     statedb.RWTable[*tables.EndpointMapEntry]
	Policy    statedb.Table[*tables.EndpointPolicy]
	// Present when the agent has a policy engine.
	PolicyComputed *tables.PolicyComputed `optional:"true"`
}

func register(p params) {
	c := &controller{log: p.Log, db: p.DB, endpoints: p.Endpoints, ipcache: p.IPCache, epmap: p.EPMap,
		policy: p.Policy, withPolicy: p.PolicyComputed != nil}
	// The datapath tables are initialized once restored endpoints have
	// their rows back: until then the reconcilers must not prune the
	// pinned entries that running pods depend on.
	wtxn := p.DB.WriteTxn(p.IPCache, p.EPMap)
	c.ipcacheInit = p.IPCache.RegisterInitializer(wtxn, "regeneration")
	c.epmapInit = p.EPMap.RegisterInitializer(wtxn, "regeneration")
	wtxn.Commit()
	p.Jobs.Add(job.OneShot("regenerate", c.run))
}
