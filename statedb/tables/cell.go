package tables

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
)

// Cell registers every table with the database and provides both the
// writable (RWTable) and read-only (Table) view of each.
var Cell = cell.Module(
	"tables",
	"Shared statedb tables",

	cell.Provide(
		NewEndpointsTable, statedb.RWTable[*Endpoint].ToTable,
		NewIdentitiesTable, statedb.RWTable[*Identity].ToTable,
		NewPodsTable, statedb.RWTable[*Pod].ToTable,
		NewIPAMTable, statedb.RWTable[*IPAMAllocation].ToTable,
		NewIPCacheTable, statedb.RWTable[*IPCacheEntry].ToTable,
		NewEndpointMapTable, statedb.RWTable[*EndpointMapEntry].ToTable,
		NewPolicyRulesTable, statedb.RWTable[*PolicyRule].ToTable,
		NewPolicyRevisionTable, statedb.RWTable[*PolicyRevision].ToTable,
		NewEndpointPolicyTable, statedb.RWTable[*EndpointPolicy].ToTable,
		NewK8sStatusTable, statedb.RWTable[*K8sStatus].ToTable,
		NewCiliumEndpointsTable, statedb.RWTable[*CiliumEndpoint].ToTable,
		NewNodesTable, statedb.RWTable[*Node].ToTable,
	),
	// Construct every table even if no cell of a custom agent uses it, so
	// /statedb/ always shows the whole schema.
	cell.Invoke(func(statedb.Table[*Endpoint], statedb.Table[*Identity], statedb.Table[*Pod],
		statedb.Table[*IPAMAllocation], statedb.Table[*IPCacheEntry], statedb.Table[*EndpointMapEntry],
		statedb.Table[*PolicyRule], statedb.Table[*PolicyRevision], statedb.Table[*EndpointPolicy],
		statedb.Table[*K8sStatus], statedb.Table[*CiliumEndpoint], statedb.Table[*Node]) {
	}),
)
