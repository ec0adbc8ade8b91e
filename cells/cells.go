// Package cells assembles Membrane's agent from its cells. Each cell is a
// package under cells/ with one job; they share state only through the
// statedb tables in statedb/ (package tables). A custom agent is a main.go
// that calls NewAgentHive with the cells it wants instead of DefaultCells
// (see docs/custom-agent.md).
package cells

import (
	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/cniconfig"
	"github.com/membrane-net/membrane/cells/endpointapi"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/health"
	"github.com/membrane-net/membrane/cells/hostips"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/monitor"
	"github.com/membrane-net/membrane/cells/podmeta"
	"github.com/membrane-net/membrane/cells/policy"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/cells/regeneration"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/cells/status"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Infrastructure every agent needs: the database, job registry, health and
// the shared tables.
var Infrastructure = cell.Group(
	statedb.Cell,
	job.Cell,
	health.Cell,
	tables.Cell,
	statedir.Cell,
)

// DefaultCells are the cells of the stock membrane-agent.
var DefaultCells = cell.Group(
	status.Cell,
	ipam.Cell,
	podmeta.Cell,
	endpointmanager.Cell,
	endpointapi.Cell,
	identity.Cell,
	policyrepo.Cell,
	policy.Cell,
	regeneration.Cell,
	loader.Cell,
	monitor.Cell,
	hostips.Cell,
	// After every cell that serves requests: start hooks run in
	// construction order, so the socket opens only once every cell above
	// has restored its state and the datapath is loaded; no request ever
	// sees a half-started agent.
	apiserver.Cell,
	// Last, after the API server: its start hook writes the CNI conflist
	// (--write-cni-conf-when-ready), and a runtime that finds the conflist
	// executes membrane-cni, which needs the socket to answer. Here the
	// file appears only once the agent serves; stop hooks run in reverse,
	// so with --remove-cni-conf-on-shutdown it goes before the socket.
	cniconfig.Cell,
)

// NewAgentHive builds a hive of the infrastructure and the given cells.
func NewAgentHive(cs ...cell.Cell) *hive.Hive {
	return hive.NewWithOptions(health.HiveOptions(), append([]cell.Cell{Infrastructure}, cs...)...)
}
