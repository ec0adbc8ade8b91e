package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// These tests run the CLI in-process against an HTTP server on a temporary
// unix socket. The server (fakeAgent) answers with canned documents: it
// checks what the CLI sends and how it renders answers, not the agent's
// behaviour (the end-to-end suite runs the CLI against the real agent).

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

// serve serves h on a new unix socket until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := tempSocket(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

type request struct {
	Method, Path, Body string
}

// fakeAgent serves canned answers on the agent's routes and records every
// request it gets.
type fakeAgent struct {
	socket string
	mux    *http.ServeMux

	mu       sync.Mutex
	requests []request
}

func newFakeAgent(t *testing.T) *fakeAgent {
	f := &fakeAgent{mux: http.NewServeMux()}
	f.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusNotFound, `{"code":404,"message":"no route for `+r.Method+` `+r.URL.Path+`"}`)
	})
	f.socket = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, request{r.Method, r.URL.EscapedPath(), string(body)})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mux.ServeHTTP(w, r)
	}))
	return f
}

// canned answers pattern (ServeMux syntax) with a fixed status and body.
func (f *fakeAgent) canned(pattern string, code int, body string) {
	f.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { answer(w, code, body) })
}

func (f *fakeAgent) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

func (f *fakeAgent) sent() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

// args prefixes a command line with this agent's socket.
func (f *fakeAgent) args(args ...string) []string {
	return append([]string{"--socket", f.socket}, args...)
}

func answer(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
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

// TestMain lets a test run the real binary's main (see TestProcessExit).
func TestMain(m *testing.M) {
	if os.Getenv("MEMBRANE_CLI_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"membrane"}, strings.Fields(os.Getenv("MEMBRANE_CLI_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

// TestProcessExit runs main in a child process: a failing command exits 1
// with one line on stderr and nothing on stdout.
func TestProcessExit(t *testing.T) {
	sock := tempSocket(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MEMBRANE_CLI_TEST_RUN_MAIN=1", "MEMBRANE_CLI_TEST_ARGS=endpoint list", "MEMBRANE_SOCKET="+sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	ee, isExit := err.(*exec.ExitError)
	if !isExit || ee.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v (stderr %q)", err, errb.String())
	}
	if out.Len() != 0 {
		t.Fatalf("stdout should be empty, got %q", out.String())
	}
	checkErrorLine(t, errb.String())
	want := "Error: cannot reach membrane-agent at " + sock + ": no such socket; is the agent running?"
	if !strings.HasPrefix(errb.String(), want) {
		t.Fatalf("stderr %q, want prefix %q", errb.String(), want)
	}
}
