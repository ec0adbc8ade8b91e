package identity_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/hive/script"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/health"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testAgent is the identity cell with just the infrastructure it needs,
// plus a stand-in for the endpoint manager: it holds the endpoints table's
// initializer, as the real one does while it restores endpoints.
type testAgent struct {
	h          *hive.Hive
	db         *statedb.DB
	endpoints  statedb.RWTable[*tables.Endpoint]
	identities statedb.Table[*tables.Identity]
	restored   func(statedb.WriteTxn)
	api        http.Handler
	stateDir   statedir.Dir
}

func newTestAgent(stateDir string, extra ...cell.Cell) *testAgent {
	a := &testAgent{}
	opts := health.HiveOptions()
	cells := []cell.Cell{
		statedb.Cell,
		job.Cell,
		cell.Provide(
			cell.NewSimpleHealth,
			func(h *cell.SimpleHealth) hive.ScriptCmdOut {
				return hive.NewScriptCmd("health", cell.SimpleHealthCmd(h))
			},
		),
		tables.Cell,
		statedir.Cell,
		identity.Cell,

		cell.Invoke(func(db *statedb.DB, eps statedb.RWTable[*tables.Endpoint], ids statedb.Table[*tables.Identity], dir statedir.Dir) {
			a.db, a.endpoints, a.identities, a.stateDir = db, eps, ids, dir
			wtxn := db.WriteTxn(eps)
			a.restored = eps.RegisterInitializer(wtxn, "test-endpoint-restore")
			wtxn.Commit()
		}),
		apiserver.RoutesHandler(func(h http.Handler) { a.api = h }),
		cell.Provide(func() hive.ScriptCmdsOut { return hive.NewScriptCmds(a.scriptCmds()) }),
	}
	a.h = hive.NewWithOptions(opts, append(cells, extra...)...)
	hive.AddConfigOverride(a.h, func(c *statedir.Config) { c.StateDir = stateDir })
	return a
}

// markRestored completes the endpoints table's initialization.
func (a *testAgent) markRestored() {
	wtxn := a.db.WriteTxn(a.endpoints)
	a.restored(wtxn)
	wtxn.Commit()
}

// get answers GET path from the cell's routes.
func (a *testAgent) get(path string) (int, string) {
	rec := httptest.NewRecorder()
	a.api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func (a *testAgent) scriptCmds() map[string]script.Cmd {
	return map[string]script.Cmd{
		"endpoints/restored": script.Command(
			script.CmdUsage{Summary: "complete the endpoints table's initialization (the endpoint manager has restored every endpoint)"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				a.markRestored()
				return nil, nil
			}),
		"api": script.Command(
			script.CmdUsage{Summary: "GET a path from the identity API; prints the status code, then the body", Args: "path"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 1 {
					return nil, script.ErrUsage
				}
				code, body := a.get(args[0])
				return func(*script.State) (string, string, error) {
					return fmt.Sprintf("%d\n%s", code, body), "", nil
				}, nil
			}),
		"statedir/cat": script.Command(
			script.CmdUsage{Summary: "print a file of the agent's state directory", Args: "name"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 1 {
					return nil, script.ErrUsage
				}
				data, err := os.ReadFile(a.stateDir.Path(args[0]))
				if err != nil {
					return nil, err
				}
				return func(*script.State) (string, string, error) { return string(data), "", nil }, nil
			}),
		"statedir/put": script.Command(
			script.CmdUsage{Summary: "copy a file of the script into the agent's state directory (before hive start: a previous run's state)", Args: "name"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 1 {
					return nil, script.ErrUsage
				}
				data, err := os.ReadFile(s.Path(args[0]))
				if err != nil {
					return nil, err
				}
				return nil, a.stateDir.WriteFile(args[0], data)
			}),
	}
}
