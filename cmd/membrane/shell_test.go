package main

import (
	"bufio"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
)

// fakeShell answers like the agent's shell (hive's protocol): "echo ARGS"
// prints its arguments one a line, "fail" fails, anything else is unknown.
// It records the lines it received.
func fakeShell(t *testing.T) (socket string, received func() []string) {
	t.Helper()
	socket = tempSocket(t)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					line := sc.Text()
					got <- line
					switch cmd, args, _ := strings.Cut(line, " "); cmd {
					case "exit":
						return
					case "echo":
						c.Write([]byte("[stdout]\n" + strings.ReplaceAll(args, " ", "\n") + "\n<<end>>\n"))
					case "fail":
						c.Write([]byte("partial output\nno table \"x\"<<error>>\n"))
					default:
						c.Write([]byte("unknown command \"" + cmd + "\"<<error>>\n"))
					}
				}
			}()
		}
	}()
	return socket, func() []string {
		var lines []string
		for {
			select {
			case l := <-got:
				lines = append(lines, l)
			default:
				return lines
			}
		}
	}
}

func TestShellOneCommand(t *testing.T) {
	sock, received := fakeShell(t)
	out := ok(t, "shell", "--shell-socket", sock, "--", "echo", "a", "b c", "it's")
	wantLines(t, out, "a", "'b", "c'", "'it''s'")
	if got := received(); len(got) != 1 || got[0] != "echo a 'b c' 'it''s'" {
		t.Errorf("sent %q", got)
	}

	// Flags after the first argument are the shell command's.
	ok(t, "shell", "--shell-socket", sock, "echo", "-f", "json")
	if got := received(); len(got) != 1 || got[0] != "echo -f json" {
		t.Errorf("sent %q", got)
	}

	r := run(t, "", "shell", "--shell-socket", sock, "--", "fail")
	if r.code != 1 || r.stdout != "partial output\n" || !strings.Contains(r.stderr, `Error: no table "x"`) {
		t.Errorf("failing command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestShellSessionFromStdin(t *testing.T) {
	sock, _ := fakeShell(t)
	r := run(t, "echo one\n\nnope\necho two\nexit\necho three\n", "shell", "--shell-socket", sock)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	wantLines(t, r.stdout, "one", `Error: unknown command "nope"`, "two")
}

func TestShellSocketNextToAPISocket(t *testing.T) {
	e := fails(t, "--socket", "/nonexistent/agent.sock", "shell", "--", "db")
	if !strings.Contains(e, "cannot reach the agent's shell at /nonexistent/agent-shell.sock: no such socket") {
		t.Errorf("stderr %q", e)
	}
}

// The shell of a real agent (the status cell alone, and Serving): its
// socket next to the API's with its mode, statedb's commands, the refusal
// to write; and Tab after "statedb" offering the agent's tables.
func TestShellAgainstAgent(t *testing.T) {
	a := startAgent(t, apiOnly)
	api, err := os.Stat(a.sock)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := os.Stat(client.ShellSocket(a.sock))
	if err != nil {
		t.Fatal(err)
	}
	if sh.Mode() != api.Mode() || sh.Mode().Perm() != 0o660 {
		t.Errorf("shell socket mode %v, API socket %v", sh.Mode(), api.Mode())
	}

	if out := ok(t, a.args("shell", "--", "db")...); !strings.Contains(out, "endpoints") || !strings.Contains(out, "ipcache") {
		t.Errorf("db:\n%s", out)
	}
	if out := ok(t, a.args("shell", "--", "db/show", "endpoints")...); !strings.HasPrefix(out, "ID") {
		t.Errorf("db/show endpoints:\n%s", out)
	}
	e := fails(t, a.args("shell", "--", "db/get", "-i", "ip", "endpoints", "not-an-ip")...)
	if !strings.Contains(e, "not-an-ip") {
		t.Errorf("db/get of a bad key: %s", e)
	}
	e = fails(t, a.args("shell", "--", "db/show", "-o", "/tmp/x", "endpoints")...)
	if !strings.Contains(e, "--out is refused: the agent's shell only reads") {
		t.Errorf("db/show -o: %s", e)
	}
	if e := fails(t, a.args("shell", "--", "db/insert", "endpoints", "x.yaml")...); !strings.Contains(e, "db/insert") {
		t.Errorf("db/insert: %s", e)
	}

	r := run(t, "", a.args("__complete", "statedb", "")...)
	if r.code != 0 || !strings.Contains(r.stdout, "endpoints\n") || !strings.Contains(r.stdout, "ipcache\n") {
		t.Errorf("completing \"statedb \": exit %d:\n%s", r.code, r.stdout)
	}
}

// Tab in a session: the agent's engine completes command names and
// their arguments (table names), cycling on repeated Tabs.
func TestShellTabCompletion(t *testing.T) {
	a := startAgent(t, apiOnly)
	app := &app{socket: a.sock, timeout: 10 * time.Second}
	sess := &session{a: app, path: client.ShellSocket(a.sock), at: -1}
	defer sess.drop()

	line, pos, ok := sess.complete("db/wa", 5, '\t')
	if !ok || line != "db/watch" || pos != len(line) {
		t.Errorf("Tab after \"db/wa\": %q %d %v", line, pos, ok)
	}
	sess.complete(line, pos, 'x') // any other key starts over
	var got []string
	for range 3 {
		line, _, ok := sess.complete("db/show endp", 12, '\t')
		if !ok {
			t.Fatal("Tab after \"db/show endp\": no completion")
		}
		got = append(got, line)
	}
	if got[0] != "db/show endpoint-policy" || got[1] != "db/show endpoints" || got[2] != got[0] {
		t.Errorf("Tabs after \"db/show endp\": %q", got)
	}
	sess.complete("nosuchcm", 8, 'd')
	if line, _, ok := sess.complete("nosuchcmd", 9, '\t'); ok {
		t.Errorf("Tab after an unknown command: %q", line)
	}
}
