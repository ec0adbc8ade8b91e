package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-net/membrane/cells/monitor/events"
)

// at is 12:00:01.123 today in the local zone, so the expected lines do
// not depend on the machine's time zone.
var at = time.Date(2025, 3, 4, 12, 0, 1, 123_000_000, time.Local)

func u8(v uint8) *uint8 { return &v }

// streamEvents are the records a fake agent streams, in the agent's format.
var streamEvents = []events.Event{
	{Time: at, Type: events.TypeDrop, Verdict: events.VerdictDropped, Reason: "policy-denied",
		Endpoint: events.Endpoint{ID: 1234, Pod: "default/web", InterfaceIndex: 41}, Direction: "ingress", Protocol: "TCP",
		Source:      events.Peer{IP: "10.0.0.5", Port: 41234, Identity: events.Identity{ID: 300, Labels: []string{"k8s:app=db"}}},
		Destination: events.Peer{IP: "10.0.0.6", Port: 80, Identity: events.Identity{ID: 301, Labels: []string{"k8s:app=web"}}}},
	{Time: at.Add(time.Second), Type: events.TypeLost, Lost: 12},
	{Time: at.Add(2 * time.Second), Type: events.TypeVerdict, Verdict: events.VerdictForwarded, Reason: "allowed-by-policy",
		Endpoint: events.Endpoint{ID: 7}, Direction: "egress", Protocol: "ICMPv6", ICMPType: u8(128),
		Source:      events.Peer{IP: "fd00::6", Identity: events.Identity{ID: 301, Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"}}},
		Destination: events.Peer{IP: "2001:db8::1", Identity: events.Identity{ID: 2, Labels: []string{"reserved:world"}}}},
	{Time: at.Add(3 * time.Second), Type: events.TypeDrop, Verdict: events.VerdictDropped, Reason: "spoofed-source",
		Endpoint: events.Endpoint{ID: 7}, Direction: "egress", Protocol: "UDP",
		Source:      events.Peer{IP: "fd00::99", Port: 53, Identity: events.Identity{ID: 2, Labels: []string{}}},
		Destination: events.Peer{IP: "fd00::1", Port: 5353, Identity: events.Identity{Labels: []string{}}}},
}

var streamLines = []string{
	"12:00:01.123 DROP (policy-denied) ingress ep 1234 (default/web) 10.0.0.5:41234 -> 10.0.0.6:80 TCP identity 300 [k8s:app=db] -> 301 [k8s:app=web]",
	"12:00:02.123 LOST 12 events (this client did not keep up; narrow it with --type or --endpoint)",
	"12:00:03.123 FORWARD (allowed-by-policy) egress ep 7 fd00::6 -> 2001:db8::1 ICMPv6 type 128 identity 301 [k8s:app=web,k8s:io.kubernetes.pod.namespace=default] -> 2 [reserved:world]",
	"12:00:04.123 DROP (spoofed-source) egress ep 7 [fd00::99]:53 -> [fd00::1]:5353 UDP identity 2 -> 0",
}

// streamHandler streams evs as the agent does, then keeps the stream open
// until the client goes away (or ends it if end is set).
func streamHandler(t *testing.T, evs []events.Event, end bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for _, ev := range evs {
			if err := enc.Encode(ev); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
		if !end {
			<-r.Context().Done()
		}
	}
}

// lastQuery records the query of every request h serves.
func lastQuery(h http.HandlerFunc) (http.HandlerFunc, func() string) {
	var (
		mu   sync.Mutex
		last string
	)
	return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			last = r.URL.RawQuery
			mu.Unlock()
			h(w, r)
		}, func() string {
			mu.Lock()
			defer mu.Unlock()
			return last
		}
}

func TestMonitorHumanFormat(t *testing.T) {
	f := newFakeAgent(t)
	h, query := lastQuery(streamHandler(t, streamEvents, false))
	f.handle("GET /v1/monitor", h)

	// --count counts events, not loss reports.
	wantLines(t, ok(t, f.args("monitor", "--count", "3")...), streamLines...)
	wantLines(t, ok(t, f.args("monitor", "--count", "1")...), streamLines[0])

	wantLines(t, ok(t, f.args("monitor", "--type", "drop", "--endpoint", "1234", "--count", "1")...), streamLines[0])
	sent := f.sent()
	if got := sent[len(sent)-1]; got.Method != "GET" || got.Path != "/v1/monitor" {
		t.Fatalf("request %+v", got)
	}
	if q := query(); q != "endpoint=1234&type=drop" {
		t.Fatalf("query %q, want endpoint=1234&type=drop", q)
	}
	ok(t, f.args("monitor", "--type", "all", "--count", "1")...)
	if q := query(); q != "" {
		t.Fatalf("--type all sent query %q, want none", q)
	}
}

func TestMonitorJSON(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET /v1/monitor", streamHandler(t, streamEvents, false))
	out := ok(t, f.args("monitor", "--count", "2", "-o", "json")...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 { // two events and the loss report between them
		t.Fatalf("want 3 lines of JSON, got:\n%s", out)
	}
	var ev events.Event
	mustJSON(t, lines[0], &ev)
	if ev.Reason != "policy-denied" || ev.Source.Identity.Labels[0] != "k8s:app=db" || !ev.Time.Equal(at) {
		t.Fatalf("first event %+v", ev)
	}
	var generic map[string]any
	mustJSON(t, lines[2], &generic)
	if generic["icmp-type"] != 128.0 || generic["direction"] != "egress" {
		t.Fatalf("third line %s", lines[2])
	}

	out = ok(t, f.args("monitor", "--count", "1", "-o", "yaml")...)
	if !strings.HasPrefix(out, "---\n") || !strings.Contains(out, "reason: policy-denied\n") {
		t.Fatalf("yaml:\n%s", out)
	}
}

func TestMonitorErrors(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET /v1/monitor", streamHandler(t, streamEvents[:1], true))

	// The agent ends the stream before --count events: that is an error.
	r := run(t, "", f.args("monitor", "--count", "5")...)
	if r.code != 1 || r.stdout != streamLines[0]+"\n" || !strings.Contains(r.stderr, "the agent ended the event stream") {
		t.Fatalf("stream ended: %+v", r)
	}
	checkErrorLine(t, r.stderr)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"monitor", "--type", "drops"}, `invalid --type "drops": want drop, verdict or all`},
		{[]string{"monitor", "--count", "-1"}, "invalid --count -1"},
		{[]string{"monitor", "--endpoint", "x"}, `invalid argument "x" for "--endpoint"`},
		{[]string{"monitor", "extra"}, `unknown command "extra"`},
	} {
		if e := fails(t, f.args(c.args...)...); !strings.Contains(e, c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}

	// An agent without the monitor cell.
	g := newFakeAgent(t)
	if e := fails(t, g.args("monitor")...); !strings.Contains(e, "no route for GET /v1/monitor (HTTP 404)") ||
		!strings.Contains(e, "does not serve the route") {
		t.Errorf("stderr %q", e)
	}
	// An agent that refuses the filter.
	g.canned("GET /v1/monitor", 400, `{"code":400,"message":"invalid type \"x\""}`)
	if e := fails(t, g.args("monitor")...); !strings.Contains(e, `monitor: agent: invalid type "x" (HTTP 400)`) {
		t.Errorf("stderr %q", e)
	}

	// --timeout bounds subscribing...
	h := newFakeAgent(t)
	h.handle("GET /v1/monitor", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	e := fails(t, h.args("monitor", "--timeout", "100ms")...)
	if !strings.Contains(e, "subscribing to the event stream timed out") || strings.Count(e, "did not answer within --timeout=100ms") != 1 {
		t.Errorf("stderr %q", e)
	}
	// ... not the stream: events may come long after.
	slow := newFakeAgent(t)
	slow.handle("GET /v1/monitor", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		json.NewEncoder(w).Encode(streamEvents[0])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	wantLines(t, ok(t, slow.args("monitor", "--timeout", "100ms", "--count", "1")...), streamLines[0])

	if e := fails(t, "--socket", tempSocket(t), "monitor"); !strings.Contains(e, "cannot reach membrane-agent") {
		t.Errorf("stderr %q", e)
	}
}

// TestMonitorInterrupt runs the CLI in a child process, as an operator
// runs it, and interrupts it like Ctrl-C does: it ends cleanly, exit 0.
func TestMonitorInterrupt(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("GET /v1/monitor", streamHandler(t, streamEvents[:1], false))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MEMBRANE_CLI_TEST_RUN_MAIN=1", "MEMBRANE_CLI_TEST_ARGS=monitor", "MEMBRANE_SOCKET="+f.socket)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil || line != streamLines[0]+"\n" {
		cmd.Process.Kill()
		t.Fatalf("first line %q, %v (stderr %q)", line, err, errb.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(rd)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || len(rest) != 0 || errb.Len() != 0 {
			t.Fatalf("after Ctrl-C: %v, stdout %q, stderr %q", err, rest, errb.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("membrane monitor did not end on SIGINT")
	}
}
