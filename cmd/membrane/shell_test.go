package main

import (
	"bufio"
	"net"
	"strings"
	"testing"
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
