package identity_test

import (
	"net/http"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/script"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testAgent is the identity cell on the agent's infrastructure
// (celltest), plus a stand-in for the endpoint manager: it holds the
// endpoints table's initializer, as the real one does while it restores
// endpoints.
type testAgent struct {
	h          *celltest.Hive
	db         *statedb.DB
	endpoints  statedb.RWTable[*tables.Endpoint]
	identities statedb.Table[*tables.Identity]
	restored   func()
}

func newTestAgent(t testing.TB, stateDir string, extra ...cell.Cell) *testAgent {
	a := &testAgent{}
	cells := []cell.Cell{
		identity.Cell,
		cell.Invoke(func(db *statedb.DB, eps statedb.RWTable[*tables.Endpoint], ids statedb.Table[*tables.Identity]) {
			a.db, a.endpoints, a.identities = db, eps, ids
			a.restored = celltest.HoldInitialization(db, eps, "test-endpoint-restore")
		}),
		cell.Provide(func() hive.ScriptCmdsOut {
			return a.h.ScriptCmdsOut(map[string]script.Cmd{
				"endpoints/restored": script.Command(
					script.CmdUsage{Summary: "complete the endpoints table's initialization (the endpoint manager has restored every endpoint)"},
					func(s *script.State, args ...string) (script.WaitFunc, error) {
						a.markRestored()
						return nil, nil
					}),
			})
		}),
	}
	a.h = celltest.New(t, stateDir, append(cells, extra...)...)
	return a
}

// markRestored completes the endpoints table's initialization.
func (a *testAgent) markRestored() { a.restored() }

// get answers GET path from the cell's routes.
func (a *testAgent) get(path string) (int, string) {
	code, body := a.h.Request(http.MethodGet, path, "")
	return code, string(body)
}
