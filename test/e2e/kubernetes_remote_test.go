package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/internal/testutil"
)

// Two agents on one API server, as two nodes (own --node-name, state dir,
// bpf root, socket and pod CIDR; one host network namespace, endpoints
// made through the API without veths): a pod endpoint of node B enters
// node A's ipcache, table and pinned map, with B's identity and source
// remote; a relabel moves its identity; the API server stopped and A
// restarted meanwhile, the entry stays (right after A is back, and while
// the API server is away: nothing is flushed); once the endpoint is
// deleted on B it leaves A. A's own endpoint is never remote on A, and is
// remote on B.
func TestKubernetesRemoteEndpoints(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	cluster := kubeCluster(t, "remote")
	kubePod(t, cluster, "remote", "web", "web", "node-b")
	kubePod(t, cluster, "remote", "local", "local", "node-a")
	a, b := twoNodes(t, cluster)

	web := putRemoteTestEndpoint(t, b, "web", 10)
	local := putRemoteTestEndpoint(t, a, "local", 11)
	webIPs, localIPs := endpointPrefixes(web), endpointPrefixes(local)

	waitIPCacheRows(t, a, "web of node B on node A", webIPs, "remote", web.Identity.ID)
	waitIPCacheRows(t, b, "local of node A on node B", localIPs, "remote", local.Identity.ID)
	expectPinned(t, a, webIPs, web.Identity.ID)
	expectCLISource(t, a, webIPs, "remote")
	// A's own endpoint is local on A, never remote.
	waitIPCacheRows(t, a, "node A's own endpoint", localIPs, "endpoint", local.Identity.ID)

	// Relabel on B: the identity moves on A.
	cluster.Kubectl(t, "label", "pod", "-n", "remote", "web", "app=web2", "--overwrite")
	var relabelled uint32
	e2eutil.Eventually(t, 60*time.Second, "web's new identity on node B", func() error {
		ep, err := b.Client.GetEndpoint(ctxT(t), fmt.Sprint(web.ID))
		if err != nil {
			return err
		}
		if ep.Identity == nil || ep.Identity.ID == web.Identity.ID || ep.State != models.StateReady {
			return fmt.Errorf("endpoint %d: identity %v, state %s", ep.ID, ep.Identity, ep.State)
		}
		relabelled = ep.Identity.ID
		return nil
	})
	waitIPCacheRows(t, a, "web's new identity on node A", webIPs, "remote", relabelled)
	expectPinnedEventually(t, a, webIPs, relabelled)

	// The API server goes away; node A restarts meanwhile: the entries
	// stay in the pinned map right after A is back, and are not flushed
	// while A cannot list the CEPs.
	cluster.StopAPIServer()
	a.Stop()
	expectPinned(t, a, webIPs, relabelled)
	a.Restart()
	expectPinned(t, a, webIPs, relabelled)
	holdPinned(t, a, webIPs, relabelled, 5*time.Second)
	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	waitKubernetes(t, a, "remote endpoints synced after the restart", func(k *models.KubernetesStatus) bool {
		return k.Reachable && cacheSynced(k, "remote-ciliumendpoints")
	})
	waitIPCacheRows(t, a, "web on node A after the restart", webIPs, "remote", relabelled)
	expectPinned(t, a, webIPs, relabelled)
	waitIPCacheRows(t, a, "node A's own endpoint after the restart", localIPs, "endpoint", local.Identity.ID)

	// The endpoint goes on B: its entries leave A.
	if err := b.Client.DeleteEndpoint(ctxT(t), fmt.Sprint(web.ID)); err != nil {
		t.Fatal(err)
	}
	waitIPCacheGone(t, a, "web deleted on node B", webIPs)
	e2eutil.Eventually(t, 30*time.Second, "web's entries out of node A's pinned ipcache", func() error {
		m := a.IPCache()
		for _, p := range webIPs {
			if id, ok := m[p]; ok {
				return fmt.Errorf("%s still maps to %d", p, id)
			}
		}
		return nil
	})
}

// startNodeAgent starts the agent of one node of the cluster, on this
// machine beside other nodes' agents: its own state dir, socket and pod
// CIDRs, and its own bpf root under bpf (agents that share one replace
// each other's pinned maps at start).
func startNodeAgent(t *testing.T, cluster *kubetest.Cluster, bpf, node string, o agentOpts) *agent {
	t.Helper()
	o.BPFRoot = filepath.Join(bpf, node)
	if err := os.MkdirAll(o.BPFRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	o.Extra = append([]string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}, o.Extra...)
	return startAgent(t, o)
}

// twoNodes starts the agents of node-a and node-b on the cluster, each
// with its own state dir, socket, pod CIDRs and bpf root, and waits until
// both have listed the other's CiliumEndpoints.
func twoNodes(t *testing.T, cluster *kubetest.Cluster) (a, b *agent) {
	t.Helper()
	bpf := testutil.BPFDir(t)
	a = startNodeAgent(t, cluster, bpf, "node-a", agentOpts{DualStack: true})
	b = startNodeAgent(t, cluster, bpf, "node-b", agentOpts{DualStack: true})
	waitCRDs(t, cluster)
	for _, ag := range []*agent{a, b} {
		waitKubernetes(t, ag, "remote endpoints synced", func(k *models.KubernetesStatus) bool {
			return k.Reachable && cacheSynced(k, "remote-ciliumendpoints") && cacheSynced(k, "pods")
		})
	}
	return a, b
}

// Policy across nodes, the Star Wars demo's rule1 on real TCP: deathstar
// runs on node A, tiefighter (org=empire) and xwing (org=alliance) on
// node B (two agents, one host network namespace: a packet from B's pod
// leaves through B's programs and enters deathstar through A's, which
// look its source up in A's ipcache). With rule1 applied, tiefighter
// reaches deathstar:80, xwing does not, port 81 is closed to both;
// relabelling xwing to org=empire on node B opens port 80 to it on node
// A. Without the remote entries both would be world, and both dropped.
func TestKubernetesRemotePolicy(t *testing.T) {
	setup(t)
	cluster := kubeCluster(t, "sw")
	for _, p := range []struct{ name, org, class, node string }{
		{"deathstar", "empire", "deathstar", "node-a"},
		{"tiefighter", "empire", "tiefighter", "node-b"},
		{"xwing", "alliance", "xwing", "node-b"},
	} {
		cluster.Apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {namespace: sw, name: %s, labels: {org: %s, class: %s}}
spec: {nodeName: %s, containers: [{name: c, image: registry.k8s.io/pause:3.10}]}
`, p.name, p.org, p.class, p.node))
	}
	a, b := twoNodes(t, cluster)
	na, nb := newNetwork(t, a, "", nil), newNetwork(t, b, "", nil)
	mk := func(n *network, name string) *pod {
		p := newPod(t, "sw", name)
		addK8sPod(t, cluster, n, p)
		return p
	}
	deathstar := mk(na, "deathstar")
	tiefighter, xwing := mk(nb, "tiefighter"), mk(nb, "xwing")
	startServer(t, deathstar, "80", "81")
	ds := deathstar.IP().String()
	for _, p := range []*pod{tiefighter, xwing} {
		ep := b.endpoint(p.Attachment())
		waitIPCacheRows(t, a, p.Name+" of node B on node A", []netip.Prefix{netip.PrefixFrom(p.IP(), 32)}, "remote", ep.Identity.ID)
	}

	cluster.Apply(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1, namespace: sw}
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`)
	verdicts := func(when string, xwingAllowed bool) {
		t.Helper()
		e2eutil.Eventually(t, 60*time.Second, when, func() error {
			for _, c := range []struct {
				from *pod
				port string
				want bool
			}{
				{tiefighter, "80", true}, {xwing, "80", xwingAllowed}, {tiefighter, "81", false}, {xwing, "81", false},
			} {
				if got := canTCP(c.from, ds, c.port); got != c.want {
					return fmt.Errorf("%s -> deathstar:%s: connected %v, want %v", c.from.Name, c.port, got, c.want)
				}
			}
			return nil
		})
	}
	verdicts("rule1 enforced on node A for node B's pods", false)

	cluster.Kubectl(t, "label", "pod", "-n", "sw", "xwing", "org=empire", "--overwrite")
	verdicts("xwing relabelled to org=empire on node B", true)
}

// putRemoteTestEndpoint makes an endpoint of the Pod object remote/name
// on the agent's node, with the nth addresses of its pod CIDRs.
func putRemoteTestEndpoint(t *testing.T, a *agent, name string, nth int) *models.Endpoint {
	t.Helper()
	v4, v6 := a.PodCIDR.Addr(), a.PodCIDRv6.Addr()
	for range nth {
		v4, v6 = v4.Next(), v6.Next()
	}
	ep, err := a.Client.PutEndpoint(ctxT(t), "0", &models.EndpointChangeRequest{
		ContainerID: "remote-" + name, ContainerInterfaceName: "eth0",
		Addressing:   &models.AddressPair{IPv4: v4.String(), IPv6: v6.String()},
		K8sNamespace: "remote", K8sPodName: name, SyncBuildEndpoint: true,
	})
	if err != nil {
		t.Fatalf("endpoint of %s: %v", name, err)
	}
	if ep.State != models.StateReady || ep.Identity == nil {
		t.Fatalf("endpoint of %s is %s after a sync build", name, ep.State)
	}
	t.Cleanup(func() { a.Client.DeleteEndpoint(ctxT(t), fmt.Sprint(ep.ID)) })
	return ep
}

func endpointPrefixes(ep *models.Endpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{ep.Addressing.IPv4, ep.Addressing.IPv6} {
		if s != "" {
			a := netip.MustParseAddr(s)
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

type ipcacheRow struct {
	Prefix   netip.Prefix `json:"prefix"`
	Identity uint32       `json:"identity"`
	Source   string       `json:"source"`
}

// ipcacheRows is the agent's ipcache table by prefix.
func ipcacheRows(t *testing.T, a *agent) (map[netip.Prefix]ipcacheRow, error) {
	raw, err := a.Client.StateDBDump(ctxT(t), "ipcache")
	if err != nil {
		return nil, err
	}
	var dump map[string][]ipcacheRow
	if err := json.Unmarshal(raw, &dump); err != nil {
		return nil, err
	}
	out := map[netip.Prefix]ipcacheRow{}
	for _, r := range dump["ipcache"] {
		out[r.Prefix] = r
	}
	return out, nil
}

func waitIPCacheRows(t *testing.T, a *agent, what string, ps []netip.Prefix, source string, id uint32) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, what, func() error {
		rows, err := ipcacheRows(t, a)
		if err != nil {
			return err
		}
		for _, p := range ps {
			r, ok := rows[p]
			if !ok || r.Source != source || r.Identity != id {
				return fmt.Errorf("%s: row %+v (found %v), want identity %d source %s", p, r, ok, id, source)
			}
		}
		return nil
	})
}

func waitIPCacheGone(t *testing.T, a *agent, what string, ps []netip.Prefix) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, what, func() error {
		rows, err := ipcacheRows(t, a)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if r, ok := rows[p]; ok {
				return fmt.Errorf("%s: row %+v still there", p, r)
			}
		}
		return nil
	})
}

// expectPinned checks the pinned ipcache map now.
func expectPinned(t *testing.T, a *agent, ps []netip.Prefix, id uint32) {
	t.Helper()
	m := a.IPCache()
	for _, p := range ps {
		if got, ok := m[p]; !ok || got != id {
			t.Fatalf("pinned ipcache of %s: %s -> %d (present %v), want %d", a.BPFRoot, p, got, ok, id)
		}
	}
}

func expectPinnedEventually(t *testing.T, a *agent, ps []netip.Prefix, id uint32) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, "pinned ipcache entries", func() error {
		m := a.IPCache()
		for _, p := range ps {
			if got, ok := m[p]; !ok || got != id {
				return fmt.Errorf("%s -> %d (present %v), want %d", p, got, ok, id)
			}
		}
		return nil
	})
}

// holdPinned checks the entries stay in the pinned map for a while.
func holdPinned(t *testing.T, a *agent, ps []netip.Prefix, id uint32, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		expectPinned(t, a, ps, id)
	}
}

// expectCLISource checks `membrane bpf ipcache list` marks the entries.
func expectCLISource(t *testing.T, a *agent, ps []netip.Prefix, source string) {
	t.Helper()
	out, err := exec.Command(bins.CLI, "--socket", a.Socket, "bpf", "ipcache", "list", "--bpf-root", a.BPFRoot, "-o", "json").Output()
	if err != nil {
		t.Fatalf("membrane bpf ipcache list: %v", err)
	}
	var entries []struct {
		Prefix string `json:"prefix"`
		Source string `json:"source"`
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		t.Fatalf("membrane bpf ipcache list -o json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Prefix] = e.Source
	}
	for _, p := range ps {
		if got[p.String()] != source {
			t.Errorf("membrane bpf ipcache list: %s has source %q, want %q\n%s", p, got[p.String()], source, out)
		}
	}
}
