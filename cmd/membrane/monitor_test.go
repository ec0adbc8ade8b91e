package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// TestMonitorOutput reads the events of packets run through the stock
// agent's programs in each output format and with each filter.
func TestMonitorOutput(t *testing.T) {
	d := startDatapathAgent(t)
	drop := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} DROP \(spoofed-source\) egress ep ` + d.id + ` \(default/web\) ` +
		`192\.0\.2\.66:\d+ -> 192\.0\.2\.1:443 TCP identity \d+ \[reserved:world[^\]]*\] -> \d+( \[[^\]]*\])?$`)

	// --type all (the default) shows both kinds; every packet alternates
	// between them, so two events in a row are one of each.
	r := d.sendUntil(d.background("monitor", "--type", "all", "--count", "2"), d.both)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || r.stderr != "" || len(lines) != 2 {
		t.Fatalf("monitor --count 2: %+v", r)
	}
	if !(d.forwardLine().MatchString(lines[0]) && drop.MatchString(lines[1]) || drop.MatchString(lines[0]) && d.forwardLine().MatchString(lines[1])) {
		t.Fatalf("monitor printed\n%s\nwant a line matching %s and one matching %s", r.stdout, d.forwardLine(), drop)
	}

	r = d.sendUntil(d.background("monitor", "--type", "drop", "--count", "1"), d.both)
	if r.code != 0 || !drop.MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Fatalf("monitor --type drop: %+v", r)
	}

	// -o json prints the agent's records, one per line.
	r = d.sendUntil(d.background("monitor", "--type", "verdict", "--count", "1", "-o", "json"), d.both)
	var ev models.MonitorEvent
	if mustJSON(t, r.stdout, &ev); strings.Count(r.stdout, "\n") != 1 || ev.Type != models.MonitorTypeVerdict ||
		ev.Reason != "policy-not-enforced" || ev.Endpoint.ID != d.ep.ID || ev.Destination.IP != d.podIP.String() {
		t.Fatalf("monitor -o json: %+v", r)
	}
	r = d.sendUntil(d.background("monitor", "--count", "1", "-o", "yaml"), d.toPod)
	if !strings.HasPrefix(r.stdout, "---\n") || !strings.Contains(r.stdout, "\nreason: policy-not-enforced\n") {
		t.Fatalf("monitor -o yaml:\n%s", r.stdout)
	}

	// Policy selects the pod: traffic from outside is denied.
	if r := run(t, policyYAML, d.args("policy", "import", "-f", "-")...); r.code != 0 {
		t.Fatalf("policy import: %+v", r)
	}
	denied := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} DROP \(policy-denied\) ingress ep ` + d.id + ` \(default/web\) ` +
		`192\.0\.2\.1:\d+ -> ` + regexp.QuoteMeta(d.podIP.String()) + `:80 TCP identity \d+ \[reserved:world[^\]]*\] -> ` +
		regexp.QuoteMeta(identityLabels(models.MonitorIdentity{ID: d.ep.Identity.ID, Labels: d.ep.Identity.Labels})) + `$`)
	r = d.sendUntil(d.background("monitor", "--type", "drop", "--endpoint", d.id, "--count", "1"), d.toPod)
	if r.code != 0 || !denied.MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Fatalf("monitor printed %q, want a line matching %s", r.stdout, denied)
	}
}

// TestMonitorTimeout: --timeout bounds subscribing, not the stream, whose
// events may come long after.
func TestMonitorTimeout(t *testing.T) {
	d := startDatapathAgent(t)
	// Generous, so that subscribing (which --timeout does bound) fits in
	// it even on a loaded machine; the events come after it has passed.
	const timeout = 3 * time.Second
	started := time.Now()
	cmd := d.background("monitor", "--timeout", timeout.String(), "--count", "1")
	d.waitForSubscribers(1)
	time.Sleep(time.Until(started.Add(timeout + 200*time.Millisecond)))
	r := d.sendUntil(cmd, d.toPod)
	if r.code != 0 || r.stderr != "" || !d.forwardLine().MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Fatalf("monitor with events after --timeout: %+v", r)
	}

	// An agent that takes the connection and never answers.
	e := fails(t, "--socket", silentSocket(t), "monitor", "--timeout", "100ms")
	if !strings.Contains(e, "subscribing to the event stream timed out") || strings.Count(e, "did not answer within --timeout=100ms") != 1 {
		t.Errorf("stderr %q", e)
	}
}

// TestMonitorInterrupt runs the CLI in a child process, as an operator
// runs it, and interrupts it like Ctrl-C does: it ends cleanly, exit 0.
func TestMonitorInterrupt(t *testing.T) {
	d := startDatapathAgent(t)
	p := startCLI(t, d.sock, "monitor")
	if r := d.sendUntil(p.nextLine(), d.toPod); !d.forwardLine().MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Fatalf("first line %q", r.stdout)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if rest, code := p.wait(); code != 0 || rest != "" || p.stderr.Len() != 0 {
		t.Fatalf("after Ctrl-C: exit %d, stdout %q, stderr %q", code, rest, p.stderr.String())
	}
}

func TestMonitorErrors(t *testing.T) {
	a := startAgent(t, apiOnly)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"monitor", "--type", "drops"}, `invalid --type "drops": want drop, verdict or all`},
		{[]string{"monitor", "--count", "-1"}, "invalid --count -1"},
		{[]string{"monitor", "--endpoint", "x"}, `invalid argument "x" for "--endpoint"`},
		{[]string{"monitor", "extra"}, `unknown command "extra"`},
		{[]string{"monitor", "--stats", "--count", "1"}, "[count stats] were all set"},
	} {
		if e := fails(t, a.args(c.args...)...); !strings.Contains(e, c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}

	// An agent without the monitor cell.
	if e := fails(t, a.args("monitor")...); !strings.Contains(e, "no route for GET /v1/monitor (HTTP 404)") ||
		!strings.Contains(e, "does not serve the route") {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, "--socket", tempSocket(t), "monitor"); !strings.Contains(e, "cannot reach membrane-agent") {
		t.Errorf("stderr %q", e)
	}
}

// at is 12:00:01.123 today in the local zone, so the expected lines do
// not depend on the machine's time zone.
var at = time.Date(2025, 3, 4, 12, 0, 1, 123_000_000, time.Local)

func u8(v uint8) *uint8 { return &v }

// streamEvents are records in the agent's format, among them what the
// agent's datapath cannot be made to send in a test: a loss report, ICMPv6,
// IPv6 addresses, identities without labels.
var streamEvents = []models.MonitorEvent{
	{Time: at, Type: models.MonitorTypeDrop, Verdict: models.MonitorVerdictDropped, Reason: "policy-denied",
		Endpoint: models.MonitorEndpoint{ID: 1234, Pod: "default/web", InterfaceIndex: 41}, Direction: "ingress", Protocol: "TCP",
		Source:      models.MonitorPeer{IP: "10.0.0.5", Port: 41234, Identity: models.MonitorIdentity{ID: 300, Labels: []string{"k8s:app=db"}}},
		Destination: models.MonitorPeer{IP: "10.0.0.6", Port: 80, Identity: models.MonitorIdentity{ID: 301, Labels: []string{"k8s:app=web"}}}},
	{Time: at.Add(time.Second), Type: models.MonitorTypeLost, Lost: 12},
	{Time: at.Add(2 * time.Second), Type: models.MonitorTypeVerdict, Verdict: models.MonitorVerdictForwarded, Reason: "allowed-by-policy",
		Endpoint: models.MonitorEndpoint{ID: 7}, Direction: "egress", Protocol: "ICMPv6", ICMPType: u8(128),
		Source:      models.MonitorPeer{IP: "fd00::6", Identity: models.MonitorIdentity{ID: 301, Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"}}},
		Destination: models.MonitorPeer{IP: "2001:db8::1", Identity: models.MonitorIdentity{ID: 2, Labels: []string{"reserved:world"}}}},
	{Time: at.Add(3 * time.Second), Type: models.MonitorTypeDrop, Verdict: models.MonitorVerdictDropped, Reason: "spoofed-source",
		Endpoint: models.MonitorEndpoint{ID: 7}, Direction: "egress", Protocol: "UDP",
		Source:      models.MonitorPeer{IP: "fd00::99", Port: 53, Identity: models.MonitorIdentity{ID: 2, Labels: []string{}}},
		Destination: models.MonitorPeer{IP: "fd00::1", Port: 5353, Identity: models.MonitorIdentity{Labels: []string{}}}},
}

var streamLines = []string{
	"12:00:01.123 DROP (policy-denied) ingress ep 1234 (default/web) 10.0.0.5:41234 -> 10.0.0.6:80 TCP identity 300 [k8s:app=db] -> 301 [k8s:app=web]",
	"12:00:02.123 LOST 12 events (this client did not keep up; narrow it with --type or --endpoint)",
	"12:00:03.123 FORWARD (allowed-by-policy) egress ep 7 fd00::6 -> 2001:db8::1 ICMPv6 type 128 identity 301 [k8s:app=web,k8s:io.kubernetes.pod.namespace=default] -> 2 [reserved:world]",
	"12:00:04.123 DROP (spoofed-source) egress ep 7 [fd00::99]:53 -> [fd00::1]:5353 UDP identity 2 -> 0",
}

func TestFormatEvent(t *testing.T) {
	for i, ev := range streamEvents {
		if got := formatEvent(ev); got != streamLines[i] {
			t.Errorf("event %d:\n got %s\nwant %s", i, got, streamLines[i])
		}
	}
}

// TestPrintEvents reads streams the agent cannot be made to send: loss
// reports, which --count does not count, and a record that is not JSON.
func TestPrintEvents(t *testing.T) {
	var records []string
	for _, ev := range streamEvents {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, string(b))
	}
	all := strings.Join(records, "\n") + "\n"
	for _, c := range []struct {
		name     string
		stream   string
		count    int
		complete bool
		err      string
		want     []string
	}{
		{"count stops at the third event, after the loss report", all, 3, true, "", streamLines},
		{"count 1", all, 1, true, "", streamLines[:1]},
		{"the stream ends first", all, 0, false, "", streamLines},
		{"blank lines", "\n" + records[0] + "\n\n  \n" + records[2] + "\n", 2, true, "", []string{streamLines[0], streamLines[2]}},
		{"not JSON", records[0] + "\n{oops\n" + records[2] + "\n", 0, false, "monitor: undecodable event from the agent: ", streamLines[:1]},
	} {
		var out bytes.Buffer
		a := &app{output: outputTable, stdout: &out}
		complete, err := a.printEvents(client.NewMonitorStream(strings.NewReader(c.stream)), c.count)
		if complete != c.complete || (err == nil) != (c.err == "") || err != nil && !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("%s: complete %v, error %v", c.name, complete, err)
		}
		if got, want := out.String(), strings.Join(c.want, "\n")+"\n"; got != want {
			t.Errorf("%s: printed\n%s\nwant\n%s", c.name, got, want)
		}
	}
}

// cliProcess is the CLI's main in a child process, as an operator runs it.
type cliProcess struct {
	t      *testing.T
	args   string
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr bytes.Buffer // read it once the process exited
}

// startCLI runs membrane with args against the agent at socket (as
// $MEMBRANE_SOCKET); a process still running when the test ends is killed.
func startCLI(t *testing.T, socket string, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{t: t, args: strings.Join(args, " "), cmd: exec.Command(os.Args[0])}
	p.cmd.Env = append(os.Environ(), "MEMBRANE_CLI_TEST_RUN_MAIN=1", "MEMBRANE_CLI_TEST_ARGS="+p.args, "MEMBRANE_SOCKET="+socket)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// nextLine reads the next line the process prints, in the background.
func (p *cliProcess) nextLine() chan result {
	ch := make(chan result, 1)
	go func() {
		line, _ := p.stdout.ReadString('\n')
		ch <- result{stdout: line}
	}()
	return ch
}

// wait returns what the process printed until it exited and its exit
// code; a process still running after 10 s fails the test.
func (p *cliProcess) wait() (rest string, code int) {
	p.t.Helper()
	done := make(chan []byte, 1)
	go func() {
		rest, _ := io.ReadAll(p.stdout)
		p.cmd.Wait()
		done <- rest
	}()
	select {
	case rest := <-done:
		return string(rest), p.cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
		p.t.Fatalf("membrane %s did not exit", p.args)
		return "", 0
	}
}
