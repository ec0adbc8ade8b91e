// Package shell serves the agent's live debug shell: statedb's script
// commands (db/show, db/get, db/prefix, db/list, db/watch, ...) and the
// other commands cells register in the hive's "script-commands" group
// (health), on a unix socket next to the API socket with the API's rights
// (client.ShellSocket: membrane.sock -> membrane-shell.sock, mode 0660).
//
// It reads no table of its own and writes none: the shell is read-only.
// The commands that would write (db/insert, db/delete, --delete) or create
// files (-o FILE) are refused, since every table has an owning cell.
//
// The wire protocol is cilium/hive's shell package's (one command per
// line; its output, then "<<end>>", or the error then "<<error>>"), so
// hive's shell client works against it too. hive's ServerCell is not used
// as is: it creates its socket with the process umask at a path of its own
// flag, where this one shares the API socket's place and mode.
//
// Try it: membrane shell -- db/show endpoints; membrane shell -- db/watch endpoints
package shell

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/script"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/cells/apiserver"
)

// The markers of hive's shell protocol (hive/shell const.go).
const (
	endMarker   = "<<end>>"
	errorMarker = "<<error>>"
)

// Cell serves the shell.
var Cell = cell.Module(
	"shell",
	"Live statedb shell on a unix socket next to the API socket",

	cell.Invoke(register),
)

// writers are the script commands refused: the tables belong to their
// cells, the shell only looks.
var writers = []string{"db/insert", "db/delete"}

type params struct {
	cell.In

	Lifecycle cell.Lifecycle
	Log       *slog.Logger
	API       apiserver.Config
	Cmds      hive.ScriptCmds
}

func register(p params) {
	cmds := p.Cmds.Map()
	for _, name := range writers {
		delete(cmds, name)
	}
	for name, c := range cmds {
		cmds[name] = readOnly{c}
	}
	cmds["help"] = script.DefaultCmds()["help"]
	s := &server{
		log:    p.Log,
		path:   client.ShellSocket(p.API.Socket),
		engine: &script.Engine{Cmds: cmds},
	}
	p.Lifecycle.Append(cell.Hook{OnStart: s.start, OnStop: s.stop})
}

// readOnly refuses a command's flags that write: --delete (of the query
// commands) and -o/--out FILE.
type readOnly struct{ script.Cmd }

func (c readOnly) Run(s *script.State, args ...string) (script.WaitFunc, error) {
	for _, flag := range []string{"delete", "out"} {
		if f := s.Flags.Lookup(flag); f != nil && f.Changed {
			return nil, fmt.Errorf("--%s is refused: the agent's shell only reads (the tables belong to their cells; save output on the client side instead)", flag)
		}
	}
	return c.Cmd.Run(s, args...)
}

type server struct {
	log    *slog.Logger
	path   string
	engine *script.Engine

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *server) start(cell.HookContext) error {
	ln, err := apiserver.Listen(s.path, "shell")
	if err != nil {
		return err
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.log.Info("Shell listening", "socket", s.path)
	s.wg.Add(1)
	go s.accept()
	return nil
}

func (s *server) stop(ctx cell.HookContext) error {
	s.cancel()
	s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("Shell sessions still running at stop", "socket", s.path)
	}
	os.Remove(s.path)
	return nil
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("Shell stopped accepting", "error", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(conn)
		}()
	}
}

// serve runs one session: each line a command, until the client leaves
// ("exit", or closes the connection) or the agent stops. A failed write
// (the client went away during db/watch) cancels the running command.
func (s *server) serve(conn net.Conn) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("Panic in a shell command", "error", r, "stack", string(debug.Stack()))
			fmt.Fprintf(conn, "PANIC: %v%s\n", r, errorMarker)
		}
	}()

	st, err := script.NewState(ctx, os.TempDir(), nil)
	if err != nil {
		s.log.Error("Shell session", "error", err)
		return
	}
	w := cancelOnError{conn, cancel}
	for line := range readLines(ctx, cancel, conn) {
		switch line {
		case "exit", "quit", "stop":
			return
		}
		var err error
		if err = s.engine.ExecuteLine(st, line, w); err != nil {
			_, err = fmt.Fprintf(w, "%s%s\n", err, errorMarker)
		} else {
			_, err = fmt.Fprintln(w, endMarker)
		}
		if err != nil {
			return
		}
	}
}

// readLines reads the client's lines ahead, so that the client closing
// the connection cancels the running command (db/watch waits for changes
// and would not notice otherwise).
func readLines(ctx context.Context, cancel context.CancelFunc, conn net.Conn) <-chan string {
	lines := make(chan string)
	go func() {
		defer close(lines)
		defer cancel()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case lines <- trimNewline(line):
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// cancelOnError ends the session's commands once the client is gone, so
// that db/watch does not outlive its reader.
type cancelOnError struct {
	w      io.Writer
	cancel context.CancelFunc
}

func (c cancelOnError) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}
