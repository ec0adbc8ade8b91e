// Package cells assembles Membrane's agent from its cells. Each cell is a
// package under cells/ with one job; they share state only through the
// statedb tables of statedb/tables. A custom agent is a main.go
// that calls NewAgentHive with the cells it wants instead of DefaultCells
// (see docs/custom-agent.md).
package cells

import (
	"reflect"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/cniconfig"
	"github.com/membrane-net/membrane/cells/cnidelqueue"
	"github.com/membrane-net/membrane/cells/endpointapi"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/hostips"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/cells/infrastructure"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/k8s"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/metrics"
	"github.com/membrane-net/membrane/cells/monitor"
	"github.com/membrane-net/membrane/cells/noderoutes"
	"github.com/membrane-net/membrane/cells/podmeta"
	"github.com/membrane-net/membrane/cells/policy"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/cells/regeneration"
	"github.com/membrane-net/membrane/cells/shell"
	"github.com/membrane-net/membrane/cells/status"
	agentmetrics "github.com/membrane-net/membrane/metrics"
)

// Infrastructure every agent has: the database, job registry, health,
// the shared tables and the state directory. NewAgentHive adds it.
var Infrastructure = infrastructure.Cell

// DefaultCells are the cells of the stock membrane-agent. The API server
// and the CNI conflist writer are not in the list: NewAgentHive places
// them itself, after every cell it is given (see Serving).
var DefaultCells = cell.Group(
	status.Cell,
	ipam.Cell,
	podmeta.Cell,
	k8s.Cell, // off unless --k8s-kubeconfig or in a pod
	endpointmanager.Cell,
	endpointapi.Cell,
	identity.Cell,
	policyrepo.Cell,
	policy.Cell,
	regeneration.Cell,
	loader.Cell,
	monitor.Cell,
	// After the loader: it reads the datapath's metrics map, and taking
	// the loader's Datapath earlier would start the loader earlier.
	metrics.Cell, // off unless --prometheus-serve-addr
	hostips.Cell,
	noderoutes.Cell, // routes to the nodes of the nodes table (Kubernetes mode)
	// Last: the DELs queued while the agent was down are done once every
	// other cell has restored its state, and before Serving opens the
	// socket.
	cnidelqueue.Cell,
)

// Serving opens the agent to its clients, and must come after every cell
// that serves or restores state: hive runs start hooks in construction
// order, so placed last the socket opens only once every cell has
// restored its state and the datapath is loaded, and no request ever sees
// a half-started agent. The conflist writer comes after the API server:
// a runtime that finds the conflist executes membrane-cni, which needs the
// socket to answer (--write-cni-conf-when-ready); stop hooks run in
// reverse, so with --remove-cni-conf-on-shutdown the file goes before the
// socket. NewAgentHive appends it, so no agent can get the order wrong.
var Serving = cell.Group(
	apiserver.Cell,
	shell.Cell, // the live statedb shell, next to the API socket
	cniconfig.Cell,
)

// NewAgentHive builds an agent: the infrastructure, the given cells, and
// Serving last. A custom agent passes its own list instead of DefaultCells
// (docs/custom-agent.md); listing apiserver.Cell or cniconfig.Cell in it
// is a programming error, refused with a message that says so.
func NewAgentHive(cs ...cell.Cell) *hive.Hive {
	for _, c := range cs {
		if listsCell(c, apiserver.Cell) || listsCell(c, cniconfig.Cell) {
			panic("cells.NewAgentHive: leave apiserver.Cell and cniconfig.Cell out of the list; NewAgentHive places them after every other cell")
		}
	}
	first, last := agentmetrics.HiveTimer() // membrane_hive_{start,stop}_duration_seconds
	all := append(append([]cell.Cell{first}, cs...), Serving, last)
	return infrastructure.New(all...)
}

// listsCell reports whether c is target or a group holding it. Groups are
// slices (not comparable), so they are walked with reflection.
func listsCell(c, target cell.Cell) bool {
	v := reflect.ValueOf(c)
	if v.Kind() == reflect.Slice {
		for i := range v.Len() {
			if inner, ok := v.Index(i).Interface().(cell.Cell); ok && listsCell(inner, target) {
				return true
			}
		}
		return false
	}
	return v.Type().Comparable() && c == target
}
