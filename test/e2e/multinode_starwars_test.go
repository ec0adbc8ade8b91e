package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Cilium's Star Wars demo across two nodes, each a network namespace
// with its own agent (multinode_harness_test.go): deathstar on node A,
// tiefighter (org=empire) and xwing (org=alliance) on node B, packets
// routed from B's namespace to A's over the segment. Cilium's L3/L4
// rule1, applied unchanged with kubectl, lets tiefighter reach
// deathstar:80 and drops xwing there (a drop, not a reset: the
// connection times out), and port 81 for both (a listener is there).
// `membrane monitor` on node A shows the drop with xwing's own identity
// (its CiliumEndpoint's, a CiliumIdentity), not world: node A's ipcache
// has B's pods. `kubectl label pod xwing org=empire` opens port 80 to
// xwing, neither pod restarted.
func TestMultiNodeStarWars(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	m := newMultiCluster(t, "sw")
	a, b := m.startTwoNodes(t)

	deathstar := a.labeledPod(t, m, "sw", "deathstar", map[string]string{"org": "empire", "class": "deathstar"})
	tiefighter := b.labeledPod(t, m, "sw", "tiefighter", map[string]string{"org": "empire", "class": "tiefighter"})
	xwing := b.labeledPod(t, m, "sw", "xwing", map[string]string{"org": "alliance", "class": "xwing"})
	startServer(t, deathstar, "80", "81")
	ds := deathstar.IP().String()

	// B's pods are in A's ipcache with their identities (those of their
	// CiliumEndpoints), source remote.
	xwingID := cepIdentity(t, m, "sw", "xwing")
	for _, p := range []*pod{tiefighter, xwing} {
		id := cepIdentity(t, m, "sw", p.Name)
		if ep := b.agent.endpoint(p.Attachment()); ep.Identity == nil || ep.Identity.ID != id {
			t.Fatalf("%s: node-b's endpoint has identity %v, its CiliumEndpoint %d", p.Name, ep.Identity, id)
		}
		waitIPCacheRows(t, a.agent, p.Name+" of node-b in node-a's ipcache", []netip.Prefix{netip.PrefixFrom(p.IP(), 32)}, "remote", id)
	}
	if xwingID <= 6 {
		t.Fatalf("xwing's identity %d is a reserved one", xwingID)
	}
	m.kube.Kubectl(t, "get", "ciliumidentity", strconv.FormatUint(uint64(xwingID), 10))
	// Before any policy everything connects.
	waitTCP(t, "no policy yet", deathstar, map[*pod]map[string]string{
		tiefighter: {"80": tcpConnected, "81": tcpConnected}, xwing: {"80": tcpConnected, "81": tcpConnected},
	})

	drops := monitorDrops(t, a)
	m.kube.Apply(t, `
apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule1"
  namespace: sw
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
`)
	waitTCP(t, "rule1 on node-a for node-b's pods", deathstar, map[*pod]map[string]string{
		tiefighter: {"80": tcpConnected, "81": tcpTimeout}, xwing: {"80": tcpTimeout, "81": tcpTimeout},
	})

	// node-a's monitor: xwing's packet to deathstar:80 dropped by policy,
	// its source judged as xwing's identity, not world.
	ev := drops.wait(t, "xwing -> deathstar:80 dropped with xwing's identity", func() { tcpOutcome(xwing, ds, "80") },
		func(ev models.MonitorEvent) bool {
			return ev.Source.IP == xwing.IP().String() && ev.Destination.IP == ds && ev.Destination.Port == 80
		})
	if ev.Reason != "policy-denied" || ev.Direction != "ingress" || ev.Source.Identity.ID != xwingID || ev.Endpoint.Pod != "sw/deathstar" {
		t.Fatalf("node-a's monitor: drop %+v, want policy-denied at deathstar's ingress from identity %d (xwing's, not world)", ev, xwingID)
	}
	t.Logf("node-a's monitor: DROP (%s) %s ep %d (%s) %s -> %s:%d identity %d %v",
		ev.Reason, ev.Direction, ev.Endpoint.ID, ev.Endpoint.Pod, ev.Source.IP, ev.Destination.IP, ev.Destination.Port,
		ev.Source.Identity.ID, ev.Source.Identity.Labels)

	// xwing joins the empire on node B: port 80 opens, nothing restarts.
	m.kube.Kubectl(t, "label", "pod", "-n", "sw", "xwing", "org=empire", "--overwrite")
	waitTCP(t, "xwing relabelled org=empire", deathstar, map[*pod]map[string]string{
		tiefighter: {"80": tcpConnected, "81": tcpTimeout}, xwing: {"80": tcpConnected, "81": tcpTimeout},
	})
	if id := cepIdentity(t, m, "sw", "xwing"); id == xwingID {
		t.Fatalf("xwing's CiliumEndpoint kept identity %d after the relabel", id)
	}
}

// Pods come and go on both nodes, a few at a time: each node's ipcache
// ends up with exactly the other node's live pods (source remote, their
// identities), nothing of the deleted ones, and each node routes exactly
// the other's pod CIDR.
func TestMultiNodePodChurn(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	m := newMultiCluster(t, "churn")
	nodes := []*mnode{m.startNode(t, "node-a", true), m.startNode(t, "node-b", true)}
	live := map[*mnode][]*pod{}
	var deleted []netip.Addr
	const rounds, perRound, delPerRound = 3, 3, 2
	for r := range rounds {
		for i, n := range nodes {
			for j := range perRound {
				name := fmt.Sprintf("p-%s-%d-%d", n.name, r, j)
				app := fmt.Sprintf("app%d", (i+j)%3) // a few identities, shared across nodes
				kubePod(t, m.kube, "churn", name, app, n.name)
				p := newPod(t, "churn", name)
				addK8sPod(t, m.kube, n.net, p)
				live[n] = append(live[n], p)
			}
			// The oldest go: CNI DEL, then the Pod object.
			for _, p := range live[n][:delPerRound] {
				if err := n.net.del(p); err != nil {
					t.Fatal(err)
				}
				m.kube.Kubectl(t, "delete", "pod", "-n", "churn", p.Name, "--wait=false")
				deleted = append(deleted, p.IP())
			}
			live[n] = live[n][delPerRound:]
		}
		for i, n := range nodes {
			other := nodes[1-i]
			waitRemoteIPCache(t, fmt.Sprintf("round %d", r), n, other, live[other], deleted)
			if rs, want := n.routes(t), []string{other.agent.PodCIDR.String() + " via " + other.ip.String()}; !slices.Equal(rs, want) {
				t.Fatalf("round %d: %s routes %v (proto 211), want %v", r, n.name, rs, want)
			}
		}
	}
}

// waitRemoteIPCache waits until on's ipcache map (membrane bpf ipcache
// list) has exactly other's live pods as remote entries, with the
// identities other's agent gave them, and no deleted address that no
// live pod holds again.
func waitRemoteIPCache(t *testing.T, when string, on, other *mnode, live []*pod, deleted []netip.Addr) {
	t.Helper()
	want := map[netip.Prefix]uint32{}
	for _, p := range live {
		ep := other.agent.endpoint(p.Attachment())
		if ep.Identity == nil {
			t.Fatalf("%s: %s's endpoint %s has no identity", when, other.name, p.Name)
		}
		want[netip.PrefixFrom(p.IP(), 32)] = ep.Identity.ID
	}
	e2eutil.Eventually(t, time.Minute, fmt.Sprintf("%s: %s's pods in %s's ipcache", when, other.name, on.name), func() error {
		entries, err := on.bpfIPCache(t)
		if err != nil {
			return err
		}
		got := map[netip.Prefix]uint32{}
		for p, e := range entries {
			if e.Source == "remote" {
				got[p] = e.Identity
			}
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("remote entries %v, want %v", got, want)
		}
		for _, ip := range deleted {
			p := netip.PrefixFrom(ip, 32)
			if e, ok := entries[p]; ok && want[p] == 0 {
				return fmt.Errorf("deleted pod's %s still there: %+v", ip, e)
			}
		}
		return nil
	})
}

// cepIdentity is the identity number of the pod's CiliumEndpoint, once
// it has one.
func cepIdentity(t *testing.T, m *multiCluster, ns, name string) uint32 {
	t.Helper()
	var id uint32
	e2eutil.Eventually(t, time.Minute, "identity of CiliumEndpoint "+ns+"/"+name, func() error {
		out, stderr, err := m.kube.KubectlErr("get", "cep", "-n", ns, name, "-o", "jsonpath={.status.identity.id}")
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("no identity yet (%q)", out)
		}
		id = uint32(n)
		return nil
	})
	return id
}

// The outcomes of a TCP connection attempt as tcpOutcome tells them.
const (
	tcpConnected = "connected"
	tcpTimeout   = "timeout" // dropped: no answer at all
	tcpRefused   = "refused" // a reset: nothing listens, or rejected
)

// tcpOutcome tries one TCP connection from p to ip:port (the client gives
// up after a second) and says how it ended.
func tcpOutcome(p *pod, ip, port string) string { return tcpOutcomeIn(p.netns(), ip, port) }

// tcpOutcomeIn is tcpOutcome from any namespace.
func tcpOutcomeIn(ns e2eutil.Netns, ip, port string) string {
	out, err := ns.Tool(context.Background(), "tcp", net.JoinHostPort(ip, port)).CombinedOutput()
	switch {
	case err == nil:
		return tcpConnected
	case strings.Contains(string(out), "i/o timeout"):
		return tcpTimeout
	case strings.Contains(string(out), "connection refused"):
		return tcpRefused
	}
	return fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
}

// waitTCP waits until every client's attempts to server's ports end as
// want says.
func waitTCP(t *testing.T, when string, server *pod, want map[*pod]map[string]string) {
	t.Helper()
	e2eutil.Eventually(t, time.Minute, when, func() error {
		for from, ports := range want {
			for port, w := range ports {
				if got := tcpOutcome(from, server.IP().String(), port); got != w {
					return fmt.Errorf("%s -> %s:%s: %s, want %s", from.Name, server.Name, port, got, w)
				}
			}
		}
		return nil
	})
}

// drops is a `membrane monitor --type drop -o json` running against a
// node's agent until the test ends.
type drops struct {
	mu     sync.Mutex
	events []models.MonitorEvent
}

func monitorDrops(t *testing.T, n *mnode) *drops {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bins.CLI, "--socket", n.agent.Socket, "monitor", "--type", "drop", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &drops{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev models.MonitorEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				d.mu.Lock()
				d.events = append(d.events, ev)
				d.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cmd.Wait() })
	return d
}

// wait runs traffic until the monitor has shown an event match accepts,
// and returns it.
func (d *drops) wait(t *testing.T, what string, traffic func(), match func(models.MonitorEvent) bool) models.MonitorEvent {
	t.Helper()
	var found models.MonitorEvent
	e2eutil.Eventually(t, 30*time.Second, "monitor: "+what, func() error {
		traffic()
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, ev := range d.events {
			if match(ev) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("%d drops seen, none matches", len(d.events))
	})
	return found
}
