package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/membrane-net/membrane/api/client"
)

// The shell speaks cilium/hive's shell protocol (cells/shell serves it):
// the client sends one command per line; the agent answers with the
// command's output, then a line ending in "<<end>>", or the error
// followed by "<<error>>". Output lines "[stdout]"/"[stderr]" only say
// which stream follows. The client is written here rather than imported
// from hive/shell, which would link the hive into the CLI.
const (
	shellEndMarker   = "<<end>>"
	shellErrorMarker = "<<error>>"
	shellPrompt      = "membrane> "
)

func (a *app) shellCommand() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "shell [-- COMMAND [ARGS...]]",
		Short: "Live shell over the agent's statedb: query tables by index, follow their changes",
		Long: `shell opens a session with the agent's live statedb shell, served on a unix
socket next to the API socket (--socket membrane.sock -> membrane-shell.sock,
the same rights). With a COMMAND after "--" it runs that one command and
exits (status 1 if the command failed).

Commands (help lists them all, help CMD explains one):
  db                           the tables, their indexes and row counts
  db/show TABLE                every row (-f json|yaml, --columns A,B)
  db/get TABLE KEY             the first row whose primary key is KEY
  db/get -i INDEX TABLE KEY    ... by a secondary index
  db/prefix [-i INDEX] TABLE KEY   the rows whose key starts with KEY
  db/list [-i INDEX] TABLE KEY     every row matching KEY
  db/watch TABLE               the rows as they change, until Ctrl-C
  health                       the cells' health

The shell only reads: commands that would change a table are refused.
In a session Ctrl-C stops the running command, Ctrl-D or "exit" leaves.

"membrane statedb TABLE" prints the same tables once, over the API, as
aligned tables or JSON for scripts; the shell adds queries by index and
db/watch.`,
		Example: `  # An interactive session ("help" lists the commands, Tab completes).
  membrane shell

  # One command, then exit.
  membrane shell -- db/show endpoints
  membrane shell -- db/get -i ip endpoints 10.210.0.5
  membrane shell -- db/list -i pod-name endpoints default/web-0
  membrane shell -- db/show -f json identities

  # Follow the endpoints table: a row per change, until Ctrl-C.
  membrane shell -- db/watch endpoints`,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := socket
			if path == "" {
				path = client.ShellSocket(a.socket)
			}
			if len(args) > 0 {
				return a.shellOnce(cmd.Context(), path, args)
			}
			return a.shellSession(path)
		},
	}
	// Everything after the first argument belongs to the shell command.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&socket, "shell-socket", "",
		"Unix socket of the agent's shell (default: next to --socket, "+client.ShellSocket(client.DefaultSocket)+")")
	return cmd
}

// shellOnce runs one command and copies its output until it ends, the
// agent goes away or ctx ends (Ctrl-C ends a db/watch: not an error).
func (a *app) shellOnce(ctx context.Context, path string, args []string) error {
	c, err := a.dialShell(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	err = c.run(shellLine(args), a.stdout)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// shellSession reads commands from the terminal (with line editing,
// history and Tab completion from the agent) or, when stdin is not a
// terminal, one per line of stdin.
func (a *app) shellSession(path string) error {
	sess := &session{a: a, path: path}
	defer sess.drop()
	readLine, console, restore := a.shellConsole(sess.complete)
	defer restore()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)

	for {
		line, err := readLine()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		line = strings.TrimSpace(line)
		switch line {
		case "":
			continue
		case "exit", "quit":
			return nil
		}
		c, err := sess.conn()
		if err != nil {
			fmt.Fprintln(console, "Error:", err)
			continue
		}
		interrupted := c.interruptOn(sigs)
		err = c.run(line, console)
		switch {
		case interrupted():
			// The agent stops a command when its client leaves: a new
			// connection for the next one.
			sess.drop()
			fmt.Fprintln(console, "(interrupted)")
		case errors.Is(err, errShellGone):
			sess.drop()
			fmt.Fprintln(console, "Error:", err)
		case err != nil:
			fmt.Fprintln(console, "Error:", err)
		}
	}
}

// session is an interactive session's connection, dialled when a command
// needs it (again after an interrupt), and its Tab completion state.
type session struct {
	a    *app
	path string
	c    *shellConn

	// Tab cycles through the suggestions for the line as it was at the
	// first Tab.
	suggestions []string
	next        int
	at          int // cursor position of the first Tab, -1 after any other key
}

func (s *session) conn() (*shellConn, error) {
	if s.c != nil {
		return s.c, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.a.timeout)
	defer cancel()
	c, err := s.a.dialShell(ctx, s.path)
	if err != nil {
		return nil, err
	}
	s.c = c
	return c, nil
}

func (s *session) drop() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// complete asks the agent for completions of the line up to the cursor
// (the script engine's "help -a PREFIX" for a command, "CMD
// --autocomplete=ARGS" for its arguments and flags) and replaces the line
// with the next one on each Tab.
func (s *session) complete(line string, pos int, key rune) (string, int, bool) {
	if key != '\t' {
		s.at = -1
		return line, pos, false
	}
	if s.at < 0 || s.suggestions == nil {
		s.at, s.next = min(pos, len(line)), 0
		s.suggestions = s.ask(line[:s.at])
	}
	if len(s.suggestions) == 0 {
		s.suggestions = nil
		return line, pos, false
	}
	sug := s.suggestions[s.next%len(s.suggestions)]
	s.next++
	return sug, len(sug), true
}

func (s *session) ask(prefix string) []string {
	c, err := s.conn()
	if err != nil {
		return nil
	}
	q := "help -a " + prefix
	if name, args, ok := strings.Cut(prefix, " "); ok {
		q = name + " --autocomplete='" + strings.ReplaceAll(args, "'", "''") + "'"
	}
	var out strings.Builder
	if err := c.run(q, &out); err != nil {
		if errors.Is(err, errShellGone) {
			s.drop()
		}
		return nil
	}
	var sugs []string
	for l := range strings.Lines(out.String()) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			sugs = append(sugs, l)
		}
	}
	slices.Sort(sugs)
	return sugs
}

// shellConsole returns where commands come from and output goes: a
// terminal in raw mode with a prompt (Ctrl-C still a signal), or stdin and
// stdout as they are.
func (a *app) shellConsole(complete func(string, int, rune) (string, int, bool)) (readLine func() (string, error), out io.Writer, restore func()) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		restore := func() {}
		if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			raw := *old
			raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
			raw.Oflag &^= unix.OPOST
			raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.IEXTEN
			raw.Lflag |= unix.ISIG
			raw.Cflag &^= unix.CSIZE | unix.PARENB
			raw.Cflag |= unix.CS8
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
			if unix.IoctlSetTermios(fd, unix.TCSETS, &raw) == nil {
				restore = func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
			}
		}
		t := term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{f, a.stdout}, shellPrompt)
		if w, h, err := term.GetSize(fd); err == nil && w > 0 && h > 0 {
			t.SetSize(w, h)
		}
		t.AutoCompleteCallback = complete
		fmt.Fprintln(t, `membrane shell: "help" lists the commands, "db" the tables; Tab completes; Ctrl-D leaves.`)
		return t.ReadLine, t, restore
	}
	sc := bufio.NewScanner(a.stdin)
	return func() (string, error) {
		if sc.Scan() {
			return sc.Text(), nil
		}
		if err := sc.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}, a.stdout, func() {}
}

// errShellGone: the connection to the agent's shell broke mid-command.
var errShellGone = errors.New("the agent's shell closed the connection (agent stopped or restarting?)")

type shellConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (a *app) dialShell(ctx context.Context, path string) (*shellConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the agent's shell at %s: %s; is membrane-agent running, and new enough to serve a shell? (--shell-socket selects another socket, --socket the API socket it sits next to)",
			path, dialFailure(path))
	}
	return &shellConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (c *shellConn) Close() error { return c.conn.Close() }

// interruptOn closes the connection on a signal until the next call of
// the returned function, which says whether it did.
func (c *shellConn) interruptOn(sigs <-chan os.Signal) (interrupted func() bool) {
	done := make(chan struct{})
	var hit bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-sigs:
			hit = true
			c.conn.Close()
		case <-done:
		}
	}()
	return func() bool {
		close(done)
		wg.Wait()
		return hit
	}
}

// run sends one command line and copies its output to w until the end
// marker; the command's error (the error marker) is returned.
func (c *shellConn) run(line string, w io.Writer) error {
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c.conn, line); err != nil {
		return fmt.Errorf("%w: %v", errShellGone, err)
	}
	c.conn.SetWriteDeadline(time.Time{})
	for {
		out, err := c.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%w: %v", errShellGone, err)
		}
		out = strings.TrimRight(out, "\r\n")
		if out == "[stdout]" || out == "[stderr]" {
			continue
		}
		if msg, ok := strings.CutSuffix(out, shellErrorMarker); ok {
			return errors.New(msg)
		}
		out, ended := strings.CutSuffix(out, shellEndMarker)
		if !ended || out != "" {
			fmt.Fprintln(w, out)
		}
		if ended {
			return nil
		}
	}
}

// shellLine joins arguments into one command line of the shell's script
// syntax: an argument with spaces, quotes or other special characters is
// single-quoted, a quote inside doubled.
func shellLine(args []string) string {
	quoted := make([]string, len(args))
	for i, arg := range args {
		if arg == "" || strings.ContainsAny(arg, " \t'\"#$\\{}") {
			arg = "'" + strings.ReplaceAll(arg, "'", "''") + "'"
		}
		quoted[i] = arg
	}
	return strings.Join(quoted, " ")
}
