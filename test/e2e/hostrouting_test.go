package e2e

import (
	"fmt"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// With --host-routing=bpf a packet between two pods of the node goes from
// the sender's host veth straight into the receiver's netns: it never
// leaves through the receiver's host veth, whose transmit counters stay
// still; with legacy host routing the stack forwards it out of that veth.
// The policy suites run in both modes (MEMBRANE_E2E_HOST_ROUTING, make
// test); this test makes sure bpf mode does not quietly fall back to the
// stack, and legacy mode does not bypass it.
func TestHostRouting(t *testing.T) {
	for _, mode := range []string{"bpf", "legacy"} {
		t.Run(mode, func(t *testing.T) { testHostRouting(t, mode) })
	}
}

func testHostRouting(t *testing.T, mode string) {
	setup(t)
	a := startAgent(t, agentOpts{DualStack: true, Extra: []string{"--host-routing", mode}})
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
	webVeth, err := netlink.LinkByName(web.Attachment().HostVeth())
	if err != nil {
		t.Fatal(err)
	}
	txBytes := func() uint64 {
		t.Helper()
		l, err := netlink.LinkByIndex(webVeth.Attrs().Index)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.TxBytes
	}
	const count, size = 50, 1000
	for _, dst := range []string{web.IP().String(), web.IPv6().String()} {
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
			t.Logf("%s: %d bytes through web's host veth for %d bytes of echo requests", dst, tx, sent)
		}
	}
}
