package shell_test

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/script"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/shell"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

type testShell struct {
	t      *testing.T
	h      *celltest.Hive
	socket string
	eps    statedb.RWTable[*tables.Endpoint]
	// block's command ran / ended (its context done).
	blocked, unblocked chan struct{}
}

// start runs the shell cell on the agent's infrastructure, with two test
// commands: "block" (runs until its session ends) and "boom" (panics).
func start(t *testing.T) *testShell {
	dir, err := os.MkdirTemp("", "mbshell")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testShell{t: t, blocked: make(chan struct{}, 1), unblocked: make(chan struct{}, 1)}
	api := apiserver.Config{Socket: filepath.Join(dir, "membrane.sock")}
	ts.socket = client.ShellSocket(api.Socket)
	cmds := map[string]script.Cmd{
		"block": script.Command(script.CmdUsage{Summary: "wait until the session ends"},
			func(s *script.State, _ ...string) (script.WaitFunc, error) {
				ts.blocked <- struct{}{}
				<-s.Context().Done()
				ts.unblocked <- struct{}{}
				return nil, nil
			}),
		"boom": script.Command(script.CmdUsage{Summary: "panic"},
			func(*script.State, ...string) (script.WaitFunc, error) { panic("boom") }),
	}
	ts.h = celltest.New(t, "", shell.Cell,
		cell.Provide(func() apiserver.Config { return api }),
		cell.Provide(func() hive.ScriptCmdsOut { return hive.NewScriptCmds(cmds) }),
		cell.Invoke(func(eps statedb.RWTable[*tables.Endpoint]) { ts.eps = eps }),
	).StartTest()
	return ts
}

type conn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func (ts *testShell) dial() *conn {
	c, err := net.Dial("unix", ts.socket)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	return &conn{ts.t, c, bufio.NewReader(c)}
}

func (c *conn) send(line string) {
	c.t.Helper()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		c.t.Fatal(err)
	}
}

// line reads one line of output (bounded).
func (c *conn) line() string {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading the shell: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

// until reads lines until one contains s.
func (c *conn) until(s string) {
	c.t.Helper()
	for {
		if strings.Contains(c.line(), s) {
			return
		}
	}
}

// answer reads a command's output up to its end or error marker.
func (c *conn) answer() (out []string, last string) {
	c.t.Helper()
	for {
		l := c.line()
		if strings.HasSuffix(l, "<<end>>") || strings.HasSuffix(l, "<<error>>") {
			return out, l
		}
		out = append(out, l)
	}
}

func TestShellCommands(t *testing.T) {
	ts := start(t)
	if fi, err := os.Stat(ts.socket); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("shell socket: %v %v, want mode 0660", fi, err)
	}
	celltest.Insert(t, ts.h.DB, ts.eps, &tables.Endpoint{ID: 7, State: tables.StateReady, IPv4: netip.MustParseAddr("10.200.0.7")})

	c := ts.dial()
	c.send("db/get -i ip endpoints 10.200.0.7")
	out, last := c.answer()
	if last != "<<end>>" || !strings.Contains(strings.Join(out, "\n"), "10.200.0.7") {
		t.Errorf("db/get: %q %q", out, last)
	}
	for _, refused := range []string{"db/list --delete endpoints 7", "db/show -o x endpoints"} {
		c.send(refused)
		if _, last := c.answer(); !strings.Contains(last, "refused: the agent's shell only reads") {
			t.Errorf("%s: %q", refused, last)
		}
	}
	c.send("db/insert endpoints x.yaml")
	if _, last := c.answer(); !strings.Contains(last, "unknown command") {
		t.Errorf("db/insert: %q", last)
	}

	// db/watch streams: the header, then a row per change.
	c.send("db/watch endpoints")
	c.until("10.200.0.7")
	celltest.Insert(t, ts.h.DB, ts.eps, &tables.Endpoint{ID: 8, State: tables.StateReady, IPv4: netip.MustParseAddr("10.200.0.8")})
	c.until("10.200.0.8")
}

// A client that leaves ends its running command; a panicking command
// ends its session only; stopping the agent ends every session.
func TestShellSessions(t *testing.T) {
	ts := start(t)
	wait := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not within 10s", what)
		}
	}

	c := ts.dial()
	c.send("block")
	wait(ts.blocked, "block started")
	c.Close()
	wait(ts.unblocked, "block ended once its client left")

	c = ts.dial()
	c.send("boom")
	if _, last := c.answer(); !strings.Contains(last, "PANIC: boom") {
		t.Errorf("boom: %q", last)
	}
	c = ts.dial()
	c.send("db/show endpoints")
	if _, last := c.answer(); last != "<<end>>" {
		t.Errorf("after a panic: %q", last)
	}

	c.send("block")
	wait(ts.blocked, "block started")
	ts.h.StopTest()
	wait(ts.unblocked, "block ended when the agent stopped")
	if _, err := os.Stat(ts.socket); !os.IsNotExist(err) {
		t.Errorf("shell socket after stop: %v", err)
	}
}
