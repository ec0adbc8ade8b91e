// Package regeneration brings endpoints' datapath in step with their rows:
// for an endpoint in waiting-to-regenerate it writes the datapath rows
// derived from it (an ipcache entry per address, IP -> identity; its
// bpf-endpoints entry, host ifindex -> endpoint), moves it to
// regenerating, and to ready once the loader's reconcilers report every
// row Done, i.e. the kernel maps hold them. When an endpoint goes away its
// rows go too.
//
// Nothing calls "regenerate": it happens because a row changed, e.g. the
// identity allocator moved the endpoint to waiting-to-regenerate after its
// labels changed. Policy rows (endpoint-policy) plug in here as one more
// kind of row an endpoint waits for.
//
// In the endpoint story this is step 6. Try it: membrane endpoint log ID.
//
// Reads: endpoints, ipcache, bpf-endpoints. Writes: ipcache, bpf-endpoints,
// endpoints (state regenerating/ready).
package regeneration

import (
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	tables "github.com/membrane-net/membrane/statedb"
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
}

func register(p params) {
	c := &controller{log: p.Log, db: p.DB, endpoints: p.Endpoints, ipcache: p.IPCache, epmap: p.EPMap}
	// The datapath tables are initialized once restored endpoints have
	// their rows back: until then the reconcilers must not prune the
	// pinned entries that running pods depend on.
	wtxn := p.DB.WriteTxn(p.IPCache, p.EPMap)
	c.ipcacheInit = p.IPCache.RegisterInitializer(wtxn, "regeneration")
	c.epmapInit = p.EPMap.RegisterInitializer(wtxn, "regeneration")
	wtxn.Commit()
	p.Jobs.Add(job.OneShot("regenerate", c.run))
}
