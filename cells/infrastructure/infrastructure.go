// Package infrastructure is what every hive of Membrane cells has under
// its cells: the database, the job registry, per-cell health, the shared
// tables and the state directory. The agent (cells.NewAgentHive) and the
// cells' test hives (internal/celltest) build on the same group, so a cell
// runs in its tests on exactly what it runs on in the agent.
package infrastructure

import (
	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/health"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell is the infrastructure group.
var Cell = cell.Group(
	statedb.Cell,
	job.Cell,
	health.Cell,
	tables.Cell,
	statedir.Cell,
)

// New builds a hive of the infrastructure and cs, with every module in a
// health scope and a job group of its own (health.HiveOptions).
func New(cs ...cell.Cell) *hive.Hive {
	return hive.NewWithOptions(health.HiveOptions(), append([]cell.Cell{Cell}, cs...)...)
}
