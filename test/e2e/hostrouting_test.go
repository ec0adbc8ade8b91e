package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// With --host-routing=bpf a packet between two pods of the node goes from
// the sender's host veth straight into the receiver's netns: it never
// leaves through the receiver's host veth, whose transmit counters stay
// still; with legacy host routing the stack forwards it out of that veth.
// The policy suites run in both modes (MEMBRANE_E2E_HOST_ROUTING, make
// test); this test makes sure bpf mode does not quietly fall back to the
// stack, and legacy mode does not bypass it.
func TestHostRouting(t *testing.T) {
	// auto, the default, is bpf on the kernels CI runs (5.10+).
	for _, mode := range []string{"bpf", "legacy", "auto"} {
		t.Run(mode, func(t *testing.T) { testHostRouting(t, mode) })
	}
}

func testHostRouting(t *testing.T, flag string) {
	setup(t)
	mode := strings.Replace(flag, "auto", "bpf", 1)
	a := startAgent(t, agentOpts{DualStack: true, Extra: []string{"--host-routing", flag}})
	// membrane status says which mode the datapath runs.
	s, err := a.Client.Healthz(e2eutil.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Modules["loader"]; !strings.Contains(got, "host routing "+mode) {
		t.Errorf("--host-routing=%s: status of the loader %q, want it to say host routing %s", flag, got, mode)
	}
	n := newNetwork(t, a, "", nil)
	mk := func(name string) *pod {
		a.putPod("default", name, map[string]string{"app": name})
		p := newPod(t, "default", name)
		if err := n.add(p); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		return p
	}
	client, web := mk("client"), mk("web")
	checkHostRouting(t, mode, client, web, web.IP().String())
	checkHostRouting(t, mode, client, web, web.IPv6().String())
}

// checkHostRouting pings dst (an address of web) from client and checks
// that the echo requests took mode's path: through web's host veth with
// legacy, past it with bpf.
func checkHostRouting(t *testing.T, mode string, client, web *pod, dst string) {
	t.Helper()
	txBytes := func() uint64 {
		t.Helper()
		l, err := netlink.LinkByName(web.Attachment().HostVeth())
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.TxBytes
	}
	const count, size = 50, 1000
	before := txBytes()
	out, err := exec.Command("ip", "netns", "exec", client.NetnsName, "ping", "-q", "-c", fmt.Sprint(count),
		"-i", "0.01", "-s", fmt.Sprint(size), "-W", "1", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from client: %v: %s", dst, err, out)
	}
	sent := uint64(count * size)
	switch tx := txBytes() - before; {
	case mode == "bpf" && tx >= sent/4:
		t.Errorf("%s: %d bytes left through web's host veth for %d bytes of echo requests: "+
			"host routing fell back to the stack", dst, tx, sent)
	case mode == "legacy" && tx < sent:
		t.Errorf("%s: %d bytes left through web's host veth for %d bytes of echo requests: "+
			"legacy host routing must forward through the stack", dst, tx, sent)
	default:
		t.Logf("%s (%s): %d bytes through web's host veth for %d bytes of echo requests", dst, mode, tx, sent)
	}
}

// Switching host routing is a restart with the other flag: connections
// between pods keep succeeding through it, policy holds in each mode, and
// each mode takes its path.
func TestHostRoutingSwitchByRestart(t *testing.T) {
	e := setupPolicyEnv(t, "tc", false)
	web := e.ip(e.web)
	e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
	  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}]`)
	loop := startTCPLoop(t, e.client, web, "8080")
	for _, mode := range []string{"bpf", "legacy", "bpf"} {
		e.a.Stop()
		e.a.Args = append(e.a.Args, "--host-routing", mode) // the last one counts
		e.a.Restart()
		e.waitRevision(0)
		checkHostRouting(t, mode, e.client, e.web, web)
		e.expect(
			tcpFact("client->web:8080 ("+mode+")", e.client, web, "8080", true),
			tcpFact("other->web:8080 ("+mode+")", e.other, web, "8080", false),
		)
	}
	loop.expectNoFailure("through restarts switching host routing")
}
