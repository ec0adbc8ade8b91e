// Package celltest builds hives for the cells' tests: the agent's own
// infrastructure (cells/infrastructure: statedb, jobs, per-cell health,
// the shared tables, the state directory) with the cells under test and
// whatever stand-ins a test adds. The routes the cells provide are served
// by an in-memory handler instead of the socket, and a test writes and
// reads table rows as the cells it leaves out would.
//
// One builder for every package keeps the test hives from drifting apart
// and from drifting away from the agent's.
package celltest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/script"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/health"
	"github.com/membrane-net/membrane/cells/infrastructure"
	"github.com/membrane-net/membrane/cells/statedir"
)

// Hive is a test hive. The fields are set when the hive is populated
// (by StartTest, or by anything that populates it, such as ScriptCommands).
type Hive struct {
	*hive.Hive
	t testing.TB

	DB       *statedb.DB
	Health   *health.Registry
	StateDir statedir.Dir
	// Routes serves the routes the cells provide (nil before populate).
	Routes http.Handler

	stopOnce sync.Once
	log      *slog.Logger
}

// New builds (does not start) a hive of the infrastructure and cs, with
// the state directory at stateDir (a fresh temporary directory if empty).
func New(t testing.TB, stateDir string, cs ...cell.Cell) *Hive {
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	h := &Hive{t: t}
	cs = append(cs,
		cell.Invoke(func(db *statedb.DB, reg *health.Registry, dir statedir.Dir) {
			h.DB, h.Health, h.StateDir = db, reg, dir
		}),
		apiserver.RoutesHandler(func(r http.Handler) { h.Routes = r }),
	)
	h.Hive = infrastructure.New(cs...)
	hive.AddConfigOverride(h.Hive, func(c *statedir.Config) { c.StateDir = stateDir })
	return h
}

// StartTest starts the hive, logging to the test, for the rest of the
// test: it stops when the test ends (or at StopTest).
func (h *Hive) StartTest() *Hive {
	return h.StartTestLogged(hivetest.Logger(h.t))
}

// StartTestLogged is StartTest with the cells logging to log.
func (h *Hive) StartTestLogged(log *slog.Logger) *Hive {
	h.t.Helper()
	h.log = log
	if err := h.Hive.Start(log, context.Background()); err != nil {
		h.t.Fatalf("start hive: %v", err)
	}
	h.t.Cleanup(h.StopTest)
	return h
}

// StopTest stops a hive started with StartTest (once; later calls do
// nothing).
func (h *Hive) StopTest() {
	h.stopOnce.Do(func() {
		if h.log == nil {
			h.log = hivetest.Logger(h.t)
		}
		if err := h.Hive.Stop(h.log, context.Background()); err != nil {
			h.t.Errorf("stop hive: %v", err)
		}
	})
}

// Request sends a request to the cells' routes and returns the status
// code and the body.
func (h *Hive) Request(method, path, body string) (int, []byte) {
	h.t.Helper()
	if h.Routes == nil {
		h.t.Fatalf("%s %s: the hive is not populated, or no cell provides routes", method, path)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	h.Routes.ServeHTTP(rec, httptest.NewRequest(method, path, rd))
	data, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, data
}

// HealthOf returns the latest report of a health scope, such as
// "policy.job-policy-engine" (module ID, then job name).
func (h *Hive) HealthOf(scope string) (health.Report, bool) {
	r, ok := h.Health.Snapshot()[scope]
	return r, ok
}

// ScriptCmdsOut are script commands over the hive that every cell's
// script tests can use: "api" (GET a path from the routes), "statedir/cat"
// and "statedir/put", plus a package's own (extra). Provide them with
// cell.Provide(func() hive.ScriptCmdsOut { return h.ScriptCmdsOut(extra) }).
func (h *Hive) ScriptCmdsOut(extra map[string]script.Cmd) hive.ScriptCmdsOut {
	cmds := map[string]script.Cmd{
		"api": script.Command(
			script.CmdUsage{Summary: "GET a path from the cells' routes; prints the status code, then the body", Args: "path"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 1 {
					return nil, script.ErrUsage
				}
				code, body := h.Request(http.MethodGet, args[0], "")
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
				data, err := os.ReadFile(h.StateDir.Path(args[0]))
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
				return nil, h.StateDir.WriteFile(args[0], data)
			}),
	}
	maps.Copy(cmds, extra)
	return hive.NewScriptCmds(cmds)
}

// Insert writes rows into one table in one write transaction, as the cell
// that owns the table would.
func Insert[T any](t testing.TB, db *statedb.DB, tbl statedb.RWTable[T], rows ...T) {
	t.Helper()
	wtxn := db.WriteTxn(tbl)
	defer wtxn.Abort()
	for _, r := range rows {
		if _, _, err := tbl.Insert(wtxn, r); err != nil {
			t.Fatalf("insert into %s: %v", tbl.Name(), err)
		}
	}
	wtxn.Commit()
}

// Delete removes a row (found by its primary key) in one write transaction.
func Delete[T any](t testing.TB, db *statedb.DB, tbl statedb.RWTable[T], row T) {
	t.Helper()
	wtxn := db.WriteTxn(tbl)
	defer wtxn.Abort()
	if _, _, err := tbl.Delete(wtxn, row); err != nil {
		t.Fatalf("delete from %s: %v", tbl.Name(), err)
	}
	wtxn.Commit()
}

// HoldInitialization registers an initializer on tbl, as the cell that
// restores the table does, and returns the function that completes it.
// Readers waiting for the table's initialization wait until then.
func HoldInitialization[T any](db *statedb.DB, tbl statedb.RWTable[T], name string) (done func()) {
	wtxn := db.WriteTxn(tbl)
	complete := tbl.RegisterInitializer(wtxn, name)
	wtxn.Commit()
	return func() {
		wtxn := db.WriteTxn(tbl)
		complete(wtxn)
		wtxn.Commit()
	}
}

// CopyStateDir copies a state directory to a new temporary one, for a
// test that starts a second hive on what a first one, never stopped (as
// after a kill), left on disk: the first still holds the original's lock.
func CopyStateDir(t testing.TB, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		t.Fatalf("copy state dir: %v", err)
	}
	return dst
}
