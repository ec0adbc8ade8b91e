package main

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/monitor/events"
	"github.com/membrane-net/membrane/internal/testutil"
)

// TestMonitorAgentSession drives membrane monitor and the bpf commands
// against the stock agent: an endpoint created as membrane-cni would (on
// lo, ifindex 1, the device BPF_PROG_RUN runs tc programs on), packets run
// through the agent's pinned programs, and the events the CLI prints. The
// agent attaches its programs to lo, so the test runs in a network
// namespace of its own (a child process).
func TestMonitorAgentSession(t *testing.T) {
	testutil.RequirePrivileged(t)
	if os.Getenv("MEMBRANE_CLI_TEST_NETNS") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMonitorAgentSession$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "MEMBRANE_CLI_TEST_NETNS=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestMonitorAgentSession") {
			t.Fatalf("in a new network namespace: %v\n%s", err, out)
		}
		return
	}

	bpfRoot, sock, stop := startAgentInProcess(t)
	m := func(args ...string) []string { return append([]string{"--socket", sock}, args...) }

	c := client.New(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.PutPod(ctx, &models.Pod{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}}); err != nil {
		t.Fatal(err)
	}
	ip, err := c.AllocateIP(ctx, &models.IPAMRequest{Owner: "c0ffee0123456789:eth0", Pod: "default/web"})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.PutEndpoint(ctx, "0", &models.EndpointChangeRequest{
		ContainerID: "c0ffee0123456789", ContainerInterfaceName: "eth0", InterfaceName: "lo", InterfaceIndex: 1,
		Addressing: &models.AddressPair{IPv4: ip.IPv4.IP}, K8sNamespace: "default", K8sPodName: "web", SyncBuildEndpoint: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ep.State != models.StateReady || ep.Identity == nil {
		t.Fatalf("endpoint not ready after sync build: %+v", ep)
	}
	id := strconv.Itoa(int(ep.ID))
	podIP := netip.MustParseAddr(ip.IPv4.IP)

	progs := map[string]*ebpf.Program{}
	for _, name := range []string{"to_container", "from_container"} {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(bpfRoot, "progs", name), nil)
		if err != nil {
			t.Fatalf("the agent's pinned program: %v", err)
		}
		defer p.Close()
		progs[name] = p
	}
	world := netip.MustParseAddr("192.0.2.1")
	sport := uint16(40000)
	// send runs packets through the agent's programs until the CLI
	// command running in the background returns; every packet is a new
	// flow (new source port), so the datapath reports each.
	send := func(cmd chan result, pkts func() map[string][]byte) result {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			for prog, pkt := range pkts() {
				if _, err := progs[prog].Run(&ebpf.RunOptions{Data: pkt}); err != nil {
					t.Fatalf("BPF_PROG_RUN %s: %v", prog, err)
				}
			}
			select {
			case r := <-cmd:
				return r
			case <-deadline:
				t.Fatal("the CLI printed no event")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	background := func(args ...string) chan result {
		ch := make(chan result, 1)
		go func() { ch <- run(t, "", m(args...)...) }()
		return ch
	}

	// Traffic from outside the cluster to the pod: no policy, so ingress
	// is not enforced and the new flow is forwarded.
	r := send(background("monitor", "--count", "1"), func() map[string][]byte {
		sport++
		return map[string][]byte{"to_container": testutil.TCP4(world, podIP, sport, 80)}
	})
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("monitor: %+v", r)
	}
	line := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} FORWARD \(policy-not-enforced\) ingress ep ` + id + ` \(default/web\) ` +
		`192\.0\.2\.1:\d+ -> ` + regexp.QuoteMeta(podIP.String()) + `:80 TCP identity \d+ \[reserved:world[^\]]*\] -> ` +
		strconv.Itoa(int(ep.Identity.ID)) + ` \[` + regexp.QuoteMeta(strings.Join(ep.Identity.Labels, ",")) + `\]\n$`)
	if !line.MatchString(r.stdout) {
		t.Fatalf("monitor printed %q, want a line matching %s", r.stdout, line)
	}

	// The pod sending from an address not its own: only the drop passes
	// --type drop.
	spoofed := netip.MustParseAddr("192.0.2.66")
	r = send(background("monitor", "--type", "drop", "--endpoint", id, "--count", "1", "-o", "json"), func() map[string][]byte {
		sport++
		return map[string][]byte{
			"to_container":   testutil.TCP4(world, podIP, sport, 80),
			"from_container": testutil.TCP4(spoofed, world, sport, 443),
		}
	})
	var ev events.Event
	mustJSON(t, r.stdout, &ev)
	if ev.Type != events.TypeDrop || ev.Verdict != events.VerdictDropped || ev.Reason != "spoofed-source" || ev.Direction != "egress" ||
		ev.Endpoint.ID != ep.ID || ev.Endpoint.Pod != "default/web" || ev.Endpoint.InterfaceIndex != 1 ||
		ev.Source.IP != spoofed.String() || ev.Destination.IP != world.String() || ev.Destination.Port != 443 || ev.Protocol != "TCP" ||
		time.Since(ev.Time).Abs() > time.Minute {
		t.Fatalf("drop event %s", r.stdout)
	}

	// The same packets, seen from the maps.
	out := ok(t, "bpf", "ct", "list", "--bpf-root", bpfRoot, "--endpoint", id)
	if !strings.Contains(out, id+" ") || !strings.Contains(out, "ingress     TCP        192.0.2.1:") {
		t.Fatalf("bpf ct list:\n%s", out)
	}
	var metrics []metricsEntry
	mustJSON(t, ok(t, "bpf", "metrics", "--bpf-root", bpfRoot, "--endpoint", id, "-o", "json"), &metrics)
	counted := map[string]uint64{}
	for _, e := range metrics {
		counted[e.Direction+"/"+e.Reason] += e.Packets
	}
	if counted["ingress/policy-not-enforced"] < 2 || counted["egress/spoofed-source"] < 1 {
		t.Fatalf("bpf metrics: %+v", metrics)
	}
	out = ok(t, m("bpf", "policy", "get", id, "--bpf-root", bpfRoot)...)
	if !strings.HasPrefix(out, "Endpoint "+id+": ingress not enforced") {
		t.Fatalf("bpf policy get:\n%s", out)
	}

	// The stream's counters: the events above were read, none lost.
	var st models.MonitorStats
	mustJSON(t, ok(t, m("monitor", "--stats", "-o", "json")...), &st)
	if st.Received < 2 || st.Invalid != 0 || st.LostInDatapath != 0 || st.LostBySubscribers != 0 {
		t.Fatalf("monitor --stats: %+v", st)
	}

	// The reader reports its health like every cell.
	if out := ok(t, m("status")...); !regexp.MustCompile(`(?m)^monitor\S*\s+OK: reading datapath events`).MatchString(out) {
		t.Fatalf("status:\n%s", out)
	}

	// Stopping the agent ends a running monitor with an error that says
	// so: the stream ends cleanly before the API server waits for its
	// connections (2s, then it closes them, which the CLI would report as
	// a broken stream instead).
	stream := background("monitor")
	time.Sleep(300 * time.Millisecond) // let it subscribe
	stop()
	r = <-stream
	if r.code != 1 || !strings.Contains(r.stderr, "the agent ended the event stream") {
		t.Fatalf("monitor when the agent stops: %+v", r)
	}
}
