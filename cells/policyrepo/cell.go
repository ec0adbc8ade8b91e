package policyrepo

import (
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell provides the Repository and the /v1/policy routes.
var Cell = cell.Module(
	"policy-repository",
	"Policy rules from the API persisted under a revision",

	cell.Provide(newRepository, (*Repository).routes),
	// Restore the rules even in an agent without the API server: the
	// engine waits for the table's initialization.
	cell.Invoke(func(*Repository) {}),
)

type params struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	DB        *statedb.DB
	Rules     statedb.RWTable[*tables.PolicyRule]
	Revisions statedb.RWTable[*tables.PolicyRevision]
	StateDir  statedir.Dir
}

func newRepository(p params) *Repository {
	r := &Repository{log: p.Log, db: p.DB, rules: p.Rules, revisions: p.Revisions, dir: p.StateDir}
	wtxn := p.DB.WriteTxn(p.Rules)
	done := p.Rules.RegisterInitializer(wtxn, "policy-repository")
	wtxn.Commit()
	p.Lifecycle.Append(cell.Hook{OnStart: func(cell.HookContext) error { return r.restore(done) }})
	return r
}
