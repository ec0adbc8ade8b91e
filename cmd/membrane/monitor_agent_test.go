package main

import (
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/testutil"
)

// datapathAgent is an agent with the endpoint of pod default/web on lo
// (ifindex 1, the device BPF_PROG_RUN runs tc programs on) and the
// agent's pinned programs, to run packets through as if they crossed the
// endpoint's veth.
type datapathAgent struct {
	*testAgent
	ep    *models.Endpoint
	id    string // the endpoint's ID
	podIP netip.Addr
	progs map[string]*ebpf.Program
	sport uint16 // source port of the last packet: each packet is a new flow
}

// Addresses of the packets.
var (
	world   = netip.MustParseAddr("192.0.2.1")  // outside the cluster
	spoofed = netip.MustParseAddr("192.0.2.66") // not the pod's
)

func startDatapathAgent(t *testing.T) *datapathAgent {
	t.Helper()
	a := startAgent(t)
	a.putPod(models.Pod{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}})
	ep := a.addEndpoint(endpointSpec{container: "c0ffee0123456789", pod: "default/web", onLo: true})
	if ep.State != models.StateReady || ep.Identity == nil {
		t.Fatalf("endpoint not ready after sync build: %+v", ep)
	}
	d := &datapathAgent{testAgent: a, ep: ep, id: strconv.Itoa(int(ep.ID)), podIP: netip.MustParseAddr(ep.Addressing.IPv4),
		progs: map[string]*ebpf.Program{}, sport: 40000}
	for _, name := range []string{"to_container", "from_container"} {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(a.bpfRoot, "progs", name), nil)
		if err != nil {
			t.Fatalf("the agent's pinned program: %v", err)
		}
		t.Cleanup(func() { p.Close() })
		d.progs[name] = p
	}
	return d
}

// toPod is a new TCP flow from outside the cluster to the pod's port 80.
func (d *datapathAgent) toPod() map[string][]byte {
	d.sport++
	return map[string][]byte{"to_container": testutil.TCP4(world, d.podIP, d.sport, 80)}
}

// spoofing is a new flow from the pod with a source address not its own.
func (d *datapathAgent) spoofing() map[string][]byte {
	d.sport++
	return map[string][]byte{"from_container": testutil.TCP4(spoofed, world, d.sport, 443)}
}

// both is a packet of each kind, to the pod first.
func (d *datapathAgent) both() map[string][]byte {
	pkts := d.toPod()
	pkts["from_container"] = d.spoofing()["from_container"]
	return pkts
}

// background runs the CLI against the agent until it returns.
func (d *datapathAgent) background(args ...string) chan result {
	ch := make(chan result, 1)
	go func() { ch <- run(d.t, "", d.args(args...)...) }()
	return ch
}

// sendUntil runs packets through the agent's programs until the CLI
// command running in the background returns, for at most 20 s.
func (d *datapathAgent) sendUntil(cmd chan result, pkts func() map[string][]byte) result {
	d.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		d.send(pkts())
		select {
		case r := <-cmd:
			return r
		case <-deadline:
			d.t.Fatal("the CLI printed no event")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// send runs packets through the agent's programs (BPF_PROG_RUN), in
// program order: to_container first.
func (d *datapathAgent) send(pkts map[string][]byte) {
	d.t.Helper()
	for _, prog := range []string{"to_container", "from_container"} {
		if pkt, ok := pkts[prog]; ok {
			if _, err := d.progs[prog].Run(&ebpf.RunOptions{Data: pkt}); err != nil {
				d.t.Fatalf("BPF_PROG_RUN %s: %v", prog, err)
			}
		}
	}
}

// forwardLine is the line monitor prints for a new flow from outside the
// cluster the pod accepts while no policy selects it.
func (d *datapathAgent) forwardLine() *regexp.Regexp {
	return regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} FORWARD \(policy-not-enforced\) ingress ep ` + d.id + ` \(default/web\) ` +
		`192\.0\.2\.1:\d+ -> ` + regexp.QuoteMeta(d.podIP.String()) + `:80 TCP identity \d+ \[reserved:world[^\]]*\] -> ` +
		strconv.Itoa(int(d.ep.Identity.ID)) + ` \[` + regexp.QuoteMeta(strings.Join(d.ep.Identity.Labels, ",")) + `\]$`)
}

// TestMonitorAgentSession drives membrane monitor and the bpf commands
// against the stock agent: packets run through the agent's pinned
// programs, the events the CLI prints, and the maps after them.
func TestMonitorAgentSession(t *testing.T) {
	d := startDatapathAgent(t)

	// Traffic from outside the cluster to the pod: no policy, so ingress
	// is not enforced and the new flow is forwarded.
	r := d.sendUntil(d.background("monitor", "--count", "1"), d.toPod)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("monitor: %+v", r)
	}
	if line := strings.TrimSuffix(r.stdout, "\n"); !d.forwardLine().MatchString(line) || strings.Contains(line, "\n") {
		t.Fatalf("monitor printed %q, want a line matching %s", r.stdout, d.forwardLine())
	}

	// The pod sending from an address not its own: only the drop passes
	// --type drop.
	r = d.sendUntil(d.background("monitor", "--type", "drop", "--endpoint", d.id, "--count", "1", "-o", "json"), d.both)
	var ev models.MonitorEvent
	mustJSON(t, r.stdout, &ev)
	if ev.Type != models.MonitorTypeDrop || ev.Verdict != models.MonitorVerdictDropped || ev.Reason != "spoofed-source" || ev.Direction != "egress" ||
		ev.Endpoint.ID != d.ep.ID || ev.Endpoint.Pod != "default/web" || ev.Endpoint.InterfaceIndex != 1 ||
		ev.Source.IP != spoofed.String() || ev.Destination.IP != world.String() || ev.Destination.Port != 443 || ev.Protocol != "TCP" ||
		time.Since(ev.Time).Abs() > time.Minute {
		t.Fatalf("drop event %s", r.stdout)
	}

	// The same packets, seen from the maps.
	out := ok(t, "bpf", "ct", "list", "--bpf-root", d.bpfRoot, "--endpoint", d.id)
	if !strings.Contains(out, d.id+" ") || !strings.Contains(out, "ingress     TCP        192.0.2.1:") {
		t.Fatalf("bpf ct list:\n%s", out)
	}
	var metrics []metricsEntry
	mustJSON(t, ok(t, "bpf", "metrics", "--bpf-root", d.bpfRoot, "--endpoint", d.id, "-o", "json"), &metrics)
	counted := map[string]uint64{}
	for _, e := range metrics {
		counted[e.Direction+"/"+e.Reason] += e.Packets
	}
	if counted["ingress/policy-not-enforced"] < 2 || counted["egress/spoofed-source"] < 1 {
		t.Fatalf("bpf metrics: %+v", metrics)
	}
	out = ok(t, d.args("bpf", "policy", "get", d.id, "--bpf-root", d.bpfRoot)...)
	if !strings.HasPrefix(out, "Endpoint "+d.id+": ingress not enforced") {
		t.Fatalf("bpf policy get:\n%s", out)
	}

	// The stream's counters: the events above were read, none lost.
	var st models.MonitorStats
	mustJSON(t, ok(t, d.args("monitor", "--stats", "-o", "json")...), &st)
	if st.Received < 2 || st.Invalid != 0 || st.LostInDatapath != 0 || st.LostBySubscribers != 0 {
		t.Fatalf("monitor --stats: %+v", st)
	}

	// The reader reports its health like every cell.
	if out := ok(t, d.args("status")...); !regexp.MustCompile(`(?m)^monitor\S*\s+OK: reading datapath events`).MatchString(out) {
		t.Fatalf("status:\n%s", out)
	}

	// Stopping the agent ends a running monitor with an error that says
	// so, after the events it printed: the stream ends cleanly before the
	// API server waits for its connections (2s, then it closes them, which
	// the CLI would report as a broken stream instead).
	p := startCLI(t, d.sock, "monitor", "--count", "5")
	if r := d.sendUntil(p.nextLine(), d.toPod); !d.forwardLine().MatchString(strings.TrimSuffix(r.stdout, "\n")) {
		t.Fatalf("first line %q", r.stdout)
	}
	d.stop()
	rest, code := p.wait()
	if code != 1 || rest != "" || p.stderr.String() != "Error: monitor: the agent ended the event stream (is it stopping?)\n" {
		t.Fatalf("monitor when the agent stops: exit %d, stdout %q, stderr %q", code, rest, p.stderr.String())
	}
}

// waitForSubscribers waits, boundedly, until n clients follow the stream.
func (d *datapathAgent) waitForSubscribers(n int) {
	d.t.Helper()
	d.waitForStats(func(st models.MonitorStats) bool { return st.Subscribers >= n })
}

// waitForReceived waits, boundedly, until the agent read n events.
func (d *datapathAgent) waitForReceived(n uint64) {
	d.t.Helper()
	d.waitForStats(func(st models.MonitorStats) bool { return st.Received >= n })
}

func (d *datapathAgent) waitForStats(cond func(models.MonitorStats) bool) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st models.MonitorStats
		if err := d.client.Get(d.ctx(), "/v1/monitor/stats", &st); err != nil {
			d.t.Fatal(err)
		}
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("monitor stats never changed as expected: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
