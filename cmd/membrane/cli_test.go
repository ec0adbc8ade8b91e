package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The CLI's tests run it in-process (execute) against membrane-agent's
// cells started in this process on temporary paths (startAgent: the stock
// cells, or a custom agent's). They make state as users and membrane-cni
// do (pods and policies through the CLI or the API; endpoints from an IPAM
// address, a veth pair and PUT /v1/endpoint) and check what operators
// see: tables, -o json and -o yaml, exit codes and error lines. What the
// agent cannot be made to answer (an unhealthy status, a loss report,
// another version's answers) is tested on the pure function that renders
// it, and an agent that hangs is a socket nobody answers (silentSocket).
// The bpf commands read maps the tests pin, the statedb commands a statedb
// database served as the agent serves it. As root the tests run in a
// network namespace of their own (TestMain); without root those that need
// it skip (testutil.RequirePrivileged).

type result struct {
	stdout, stderr string
	code           int
}

// run executes the CLI with args and stdin.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(args, strings.NewReader(stdin), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// ok runs the CLI and fails the test unless it succeeds without stderr.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, "", args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("membrane %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// fails runs the CLI, expects exit code 1 and returns the error line.
func fails(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, "", args...)
	if r.code != 1 {
		t.Fatalf("membrane %s: exit %d, want 1; stdout:\n%s", strings.Join(args, " "), r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	return r.stderr
}

// checkErrorLine asserts the operator gets one "Error: ..." line and no trace.
func checkErrorLine(t *testing.T, stderr string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "Error: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("want one line starting with \"Error: \" on stderr, got %q", stderr)
	}
	for _, bad := range []string{"goroutine ", "panic:", ".go:"} {
		if strings.Contains(stderr, bad) {
			t.Fatalf("stderr looks like a stack trace: %q", stderr)
		}
	}
}

// tempDirShort is a temporary directory whose path leaves room for a
// socket name within sun_path (108 bytes); t.TempDir's may not.
func tempDirShort(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// tempSocket returns a path for a unix socket.
func tempSocket(t *testing.T) string {
	t.Helper()
	return filepath.Join(tempDirShort(t), "agent.sock")
}

// wantLines compares output line by line, so a failure shows the table.
func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	w := strings.Join(want, "\n") + "\n"
	if got != w {
		t.Fatalf("output:\n%s\nwant:\n%s", got, w)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
}

// netnsEnv marks the child process TestMain runs the tests in.
const netnsEnv = "MEMBRANE_CLI_TEST_NETNS"

// TestMain lets a test run the real binary's main (see TestProcessExit).
// Otherwise, as root, it runs the tests in a child process in a network
// namespace of their own: the agents they start attach to the veths the
// tests make and to lo, and nothing of it reaches the machine's network,
// or outlives the child, whatever becomes of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("MEMBRANE_CLI_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"membrane"}, strings.Fields(os.Getenv("MEMBRANE_CLI_TEST_ARGS"))...)
		main()
		return
	}
	if os.Geteuid() == 0 && os.Getenv(netnsEnv) != "1" {
		os.Exit(runInOwnNetns())
	}
	os.Exit(m.Run())
}

// runInOwnNetns runs this test binary again, with the same arguments, in a
// new network namespace, and returns its exit code. The child is killed
// if this process dies.
func runInOwnNetns() int {
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "running the tests in a network namespace of their own: %v\n", err)
	return 1
}

// TestProcessExit runs main in a child process: a failing command exits 1
// with one line on stderr and nothing on stdout.
func TestProcessExit(t *testing.T) {
	sock := tempSocket(t)
	p := startCLI(t, sock, "endpoint", "list")
	if rest, code := p.wait(); code != 1 || rest != "" {
		t.Fatalf("exit %d, stdout %q (stderr %q), want exit 1 and no output", code, rest, p.stderr.String())
	}
	checkErrorLine(t, p.stderr.String())
	want := "Error: cannot reach membrane-agent at " + sock + ": no such socket; is the agent running?"
	if !strings.HasPrefix(p.stderr.String(), want) {
		t.Fatalf("stderr %q, want prefix %q", p.stderr.String(), want)
	}
}
