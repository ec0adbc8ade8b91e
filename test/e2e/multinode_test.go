package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Two nodes, each a network namespace with its own agent, on one L2
// segment and one API server (multinode_harness_test.go). Each announces
// its CiliumNode; each routes the other's pod CIDR via the other's
// address, so a pod on node A reaches a pod on node B with its own source
// address. The routes survive an agent restart and an API server
// outage; a CiliumNode whose pod CIDR overlaps another's is refused
// (status, event) and not routed; a node deleted loses its route.
func TestMultiNodeDirectRouting(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	m := newMultiCluster(t, "web")
	a := m.startNode(t, "node-a", false) // its InternalIP from the default route
	b := m.startNode(t, "node-b", true)  // --node-ip
	cidrA, cidrB := a.agent.PodCIDR, b.agent.PodCIDR

	// Each routes the other's pod CIDR via the other's address.
	waitRoute(t, a, cidrB, b.ip, true)
	waitRoute(t, b, cidrA, a.ip, true)
	if rs := a.routes(t); len(rs) != 1 {
		t.Fatalf("node-a has routes of membrane's protocol %v, want only node-b's", rs)
	}
	waitNodeRow(t, a, "node-b", func(r nodeListRow) error {
		if r.Local || r.Routes != "installed" || !slices.Equal(r.PodCIDRs, []string{cidrB.String()}) ||
			len(r.Addresses) == 0 || r.Addresses[0] != b.ip.String() {
			return fmt.Errorf("row %+v, want %s via %s installed", r, cidrB, b.ip)
		}
		return nil
	})
	waitNodeRow(t, a, "node-a", func(r nodeListRow) error {
		if !r.Local || r.Routes != "local" || len(r.Addresses) == 0 || r.Addresses[0] != a.ip.String() {
			return fmt.Errorf("row %+v, want local with address %s (the default route's)", r, a.ip)
		}
		return nil
	})
	// node-b's address is remote-node to node-a; node-a's own is host.
	e2eutil.Eventually(t, 30*time.Second, "node addresses in node-a's ipcache", func() error {
		ipc := a.agent.IPCache()
		if id := ipc[netip.PrefixFrom(b.ip, 32)]; id != 6 {
			return fmt.Errorf("node-b's %s has identity %d, want 6 (remote-node)", b.ip, id)
		}
		if id := ipc[netip.PrefixFrom(a.ip, 32)]; id != 1 {
			return fmt.Errorf("node-a's own %s has identity %d, want 1 (host)", a.ip, id)
		}
		return nil
	})

	// Pod to pod across the nodes, keeping its source address.
	client := a.pod(t, m, "web", "client")
	server := b.pod(t, m, "web", "server")
	startServer(t, server, "8080")
	crossNodeTraffic(t, "", client, server)
	out, err := execOut(bins.CLI, "--socket", a.agent.Socket, "node", "list")
	if err != nil || !strings.Contains(out, "node-b") || !strings.Contains(out, "installed") {
		t.Fatalf("membrane node list on node-a: %v\n%s", err, out)
	}
	t.Logf("membrane node list on node-a:\n%s", out)

	// Agent A restarts: the route stays while it is down and after it
	// has pruned (which waits for the CiliumNodes), traffic flows.
	a.agent.Stop()
	if !a.hasRoute(t, cidrB, b.ip) {
		t.Fatalf("node-a's route to %s went with its agent: %v", cidrB, a.routes(t))
	}
	crossNodeTraffic(t, "while node-a's agent is down", client, server)
	a.agent.Restart()
	waitNodeRow(t, a, "node-b", func(r nodeListRow) error {
		if r.Routes != "installed" {
			return fmt.Errorf("routes %s", r.Routes)
		}
		return nil
	})
	if !a.hasRoute(t, cidrB, b.ip) {
		t.Fatalf("node-a's route to %s gone after its agent restarted: %v", cidrB, a.routes(t))
	}
	crossNodeTraffic(t, "after node-a's agent restarted", client, server)

	// The API server away: nothing is flushed.
	m.kube.StopAPIServer()
	apiUp := false
	t.Cleanup(func() {
		if !apiUp {
			m.kube.StartAPIServer()
		}
	})
	waitKubernetes(t, a.agent, "API server unreachable", func(k *models.KubernetesStatus) bool { return !k.Reachable })
	if !a.hasRoute(t, cidrB, b.ip) || !b.hasRoute(t, cidrA, a.ip) {
		t.Fatalf("routes flushed while the API server is away: node-a %v, node-b %v", a.routes(t), b.routes(t))
	}
	crossNodeTraffic(t, "while the API server is away", client, server)
	// Agent A is killed (kill -9) and restarts while the API server is
	// away: its nodes table stays uninitialized, so nothing is pruned,
	// neither the route nor node-b's ipcache entry. (Killed: a clean stop
	// waits for the identity garbage collector's lease release,
	// which needs the API server.)
	a.agent.Kill()
	a.agent.Restart()
	waitKubernetes(t, a.agent, "API server unreachable after the restart", func(k *models.KubernetesStatus) bool {
		return !k.Reachable && k.LastError != ""
	})
	if !a.hasRoute(t, cidrB, b.ip) {
		t.Fatalf("node-a's route pruned at a start without the API server: %v", a.routes(t))
	}
	if id := a.agent.IPCache()[netip.PrefixFrom(b.ip, 32)]; id != 6 {
		t.Fatalf("node-b's address has identity %d in node-a's ipcache after a start without the API server, want 6", id)
	}
	crossNodeTraffic(t, "after node-a's agent restarted without the API server", client, server)
	if err := m.kube.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	apiUp = true
	waitKubernetes(t, a.agent, "API server reachable", func(k *models.KubernetesStatus) bool { return k.Reachable })

	// A third node claiming a CIDR inside node-b's: refused, not routed.
	overlap := netip.PrefixFrom(cidrB.Addr(), 25)
	nodeC := m.seg.subnet.Addr().Next().Next().Next() // an address no namespace holds
	m.kube.Apply(t, fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {name: node-c}
spec:
  addresses: [{type: InternalIP, ip: %s}]
  ipam: {podCIDRs: [%s]}
`, nodeC, overlap))
	waitNodeRow(t, a, "node-c", func(r nodeListRow) error {
		if !strings.HasPrefix(r.Routes, "refused: ") || !strings.Contains(r.Routes, "node-b") {
			return fmt.Errorf("row %+v, want refused for overlapping node-b", r)
		}
		return nil
	})
	e2eutil.Eventually(t, 30*time.Second, "PodCIDROverlap event on node-c", func() error {
		out := m.kube.Kubectl(t, "get", "events", "-A", "--field-selector", "involvedObject.name=node-c,reason=PodCIDROverlap", "-o", "name")
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("no event")
		}
		return nil
	})
	for _, r := range a.routes(t) {
		if strings.Contains(r, nodeC.String()) {
			t.Fatalf("node-a routes via the refused node-c: %v", a.routes(t))
		}
	}
	if !a.hasRoute(t, cidrB, b.ip) {
		t.Fatalf("node-b's route went when node-c came: %v", a.routes(t))
	}
	m.kube.Kubectl(t, "delete", "ciliumnode", "node-c")
	waitNodeRow(t, a, "node-c", nil)

	// node-b leaves the cluster: its agent stops, its CiliumNode is
	// deleted; node-a drops its route, its address's entry and the
	// entries of its pods (whose CiliumEndpoints stay until the Pods are
	// garbage collected).
	serverIP := netip.PrefixFrom(server.IP(), 32)
	waitIPCacheRows(t, a.agent, "node-b's pod in node-a's ipcache", []netip.Prefix{serverIP}, "remote",
		b.agent.endpoint(server.Attachment()).Identity.ID)
	b.agent.Stop()
	m.kube.Kubectl(t, "delete", "ciliumnode", "node-b")
	waitRoute(t, a, cidrB, b.ip, false)
	waitNodeRow(t, a, "node-b", nil)
	e2eutil.Eventually(t, 30*time.Second, "node-b's address and pod gone from node-a's ipcache", func() error {
		ipc := a.agent.IPCache()
		if id, ok := ipc[netip.PrefixFrom(b.ip, 32)]; ok {
			return fmt.Errorf("node-b's address still there with identity %d", id)
		}
		if id, ok := ipc[serverIP]; ok {
			return fmt.Errorf("node-b's pod %s still there with identity %d", serverIP, id)
		}
		return nil
	})
	if out := m.kube.Kubectl(t, "get", "cep", "-n", "web", "server", "-o", "name"); strings.TrimSpace(out) == "" {
		t.Fatal("the server's CiliumEndpoint went with node-b: the test no longer tells node-a's part")
	}
	if rs := a.routes(t); len(rs) != 0 {
		t.Fatalf("node-a keeps routes of membrane's protocol: %v", rs)
	}
}

// execOut runs a command and returns its output (stdout and stderr).
func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// waitRoute waits until on routes (want) or stops routing (!want) dst
// via gw.
func waitRoute(t *testing.T, on *mnode, dst netip.Prefix, gw netip.Addr, want bool) {
	t.Helper()
	what := fmt.Sprintf("route %s via %s on %s: %v", dst, gw, on.name, want)
	e2eutil.Eventually(t, time.Minute, what, func() error {
		if on.hasRoute(t, dst, gw) != want {
			return fmt.Errorf("routes of %s: %v", on.name, on.routes(t))
		}
		return nil
	})
}

// waitNodeRow waits until on's `membrane node list` has (or, with ok
// nil, no longer has) a row for name that ok accepts.
func waitNodeRow(t *testing.T, on *mnode, name string, ok func(nodeListRow) error) {
	t.Helper()
	e2eutil.Eventually(t, time.Minute, fmt.Sprintf("node list of %s: %s", on.name, name), func() error {
		rows, err := on.nodeList(t)
		if err != nil {
			return err
		}
		r, found := rows[name]
		switch {
		case ok == nil && found:
			return fmt.Errorf("still listed: %+v", r)
		case ok == nil:
			return nil
		case !found:
			return fmt.Errorf("not listed (rows %+v)", rows)
		}
		return ok(r)
	})
}

// crossNodeTraffic checks ICMP, TCP and UDP from client to server, and
// that the server sees the client's own address.
func crossNodeTraffic(t *testing.T, when string, client, server *pod) {
	t.Helper()
	sip := server.IP().String()
	e2eutil.Eventually(t, 30*time.Second, "cross-node traffic "+when, func() error {
		switch {
		case !canPing(client, sip):
			return fmt.Errorf("ping %s -> %s failed", client.IP(), sip)
		case !canTCP(client, sip, "8080"):
			return fmt.Errorf("TCP %s -> %s:8080 failed", client.IP(), sip)
		case !canUDP(client, sip, "8080"):
			return fmt.Errorf("UDP %s -> %s:8080 failed", client.IP(), sip)
		}
		src, err := client.netns().SourceSeenBy(net.JoinHostPort(sip, "8080"))
		if err != nil {
			return fmt.Errorf("asking the server the source address: %v", err)
		}
		if src != client.IP().String() {
			return fmt.Errorf("the server saw source %s, want the client pod's %s (masqueraded?)", src, client.IP())
		}
		return nil
	})
}
