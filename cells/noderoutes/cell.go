// Package noderoutes reaches the other nodes of the cluster: from the
// nodes table (written by k8s-nodes) it installs, for each other node, a
// kernel route to each of its pod CIDRs via its InternalIP (direct
// routing: the nodes share one L2 segment, like Cilium's
// auto-direct-node-routes), and gives the nodes' addresses the identity
// remote-node (6) in the ipcache (source "node"). This node's own row
// and refused rows (overlapping pod CIDRs) get no route.
//
// The routes are reconciled with the statedb reconciler (the row's
// routes column is its status) and carry their own route protocol
// (RouteProtocol), so pruning, which removes the routes no row explains,
// touches no other route. Pruning waits for the nodes table's
// initialization (k8s-nodes' first list), so an agent restarting, or
// starting while the API server is away, keeps the routes of the last
// run; a node deleted from the cluster loses its routes and entries.
//
// How a node is reached is the Datapath interface: direct routing is
// one implementation; a tunnel (VXLAN) would be another
// (docs/multinode.md).
//
// Reads: nodes. Writes: the kernel's main routing table (protocol
// RouteProtocol), ipcache (source "node"), nodes (routes column).
// Try it: membrane node list; ip route show proto 211.
package noderoutes

import (
	"fmt"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell installs the routes to the other nodes' pods and their addresses'
// ipcache entries.
var Cell = cell.Module(
	"node-routes",
	"Routes to the other nodes pod CIDRs and their addresses in the ipcache",
	cell.Provide(newDatapath),
	cell.Invoke(registerReconciler, registerIPCache),
)

// newDatapath is how this node reaches the others: direct routing.
func newDatapath() Datapath { return DirectRouting{} }

// pruneInterval bounds how long a route no row explains (left by a
// previous run, or added by hand with our protocol) survives.
const pruneInterval = time.Minute

func registerReconciler(p reconciler.Params, jobs job.Registry, health cell.Health, dp Datapath, nodes statedb.RWTable[*tables.Node]) error {
	// A route to another node that fails (its address not on a local
	// link) breaks the traffic to that node's pods, not this node's: it
	// must not make the agent unhealthy, which would fail CNI STATUS and
	// stop the runtime from starting pods here. The row's routes column
	// and `membrane node list` show the error.
	p.JobGroup = jobs.NewGroup(routeHealth{health})
	_, err := reconciler.Register(p, nodes,
		(*tables.Node).Clone, (*tables.Node).SetStatus, (*tables.Node).GetStatus,
		ops{dp}, nil,
		reconciler.WithPruning(pruneInterval),
		reconciler.WithRetry(100*time.Millisecond, 10*time.Second),
		reconciler.WithName(nodes.Name())) // the table label of membrane_reconciler_*
	return err
}

func registerIPCache(jobs job.Group, db *statedb.DB, nodes statedb.Table[*tables.Node], ipcache statedb.RWTable[*tables.IPCacheEntry]) {
	wtxn := db.WriteTxn(ipcache)
	initDone := ipcache.RegisterInitializer(wtxn, "node-routes")
	wtxn.Commit()
	s := &ipcacheSyncer{db: db, nodes: nodes, ipcache: ipcache, initDone: initDone}
	jobs.Add(job.OneShot("node-addresses-in-ipcache", s.run))
}

// routeHealth reports a Degraded health as OK with the reason and error.
type routeHealth struct{ cell.Health }

func (h routeHealth) Degraded(reason string, err error) {
	h.Health.OK(fmt.Sprintf("%s (routes to other nodes failing, retried; membrane node list): %v", reason, err))
}

func (h routeHealth) NewScope(name string) cell.Health { return routeHealth{h.Health.NewScope(name)} }
