package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Entities across nodes mean what they mean in Cilium. To a pod on node
// A: node B's own address (a connection from B's host namespace) is
// remote-node; B's pods are cluster, by their own identities; a machine
// on the segment that is no node of the cluster is world, and a CIDR rule
// naming its address lets it in. Each policy replaces the previous one
// (kubectl apply of the same object) and the three sources are tried
// against it.
func TestMultiNodeEntities(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	m := newMultiCluster(t, "ent")
	a, b := m.startTwoNodes(t)

	srv := a.labeledPod(t, m, "ent", "srv", map[string]string{"app": "srv"})
	cli := b.labeledPod(t, m, "ent", "cli", map[string]string{"app": "cli"})
	startServer(t, srv, "80")
	waitIPCacheRows(t, a.agent, "node-b's pod in node-a's ipcache",
		[]netip.Prefix{netip.PrefixFrom(cli.IP(), 32)}, "remote", cepIdentity(t, m, "ent", "cli"))

	// An outside machine: a namespace on the segment, no agent, no
	// CiliumNode, routed to node A's pods through node A.
	extNS, extIP := m.seg.addNode(t, "ext")
	ipCmd(t, "-n", extNS, "route", "add", a.agent.PodCIDR.String(), "via", a.ip.String())
	sources := []struct {
		name string
		ns   e2eutil.Netns
	}{
		{"node-b's host", e2eutil.IPNetns("node-b", b.netns)},
		{"node-b's pod", cli.netns()},
		{"an outside machine", e2eutil.IPNetns("outside", extNS)},
	}

	policy := func(ingress string) string {
		return fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: srv-ingress, namespace: ent}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  ingress:
  - %s
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`, ingress)
	}
	ip := srv.IP().String()
	for _, tc := range []struct {
		from string
		want [3]string // node-b's host, node-b's pod, the outside machine
	}{
		{"fromEntities: [remote-node]", [3]string{tcpConnected, tcpTimeout, tcpTimeout}},
		{"fromEntities: [cluster]", [3]string{tcpConnected, tcpConnected, tcpTimeout}},
		{"fromEntities: [world]", [3]string{tcpTimeout, tcpTimeout, tcpConnected}},
		{fmt.Sprintf("fromCIDR: [%s/32]", extIP), [3]string{tcpTimeout, tcpTimeout, tcpConnected}},
		{"fromEndpoints: [{matchLabels: {app: cli}}]", [3]string{tcpTimeout, tcpConnected, tcpTimeout}},
	} {
		m.kube.Apply(t, policy(tc.from))
		e2eutil.Eventually(t, time.Minute, tc.from, func() error {
			for i, src := range sources {
				if got := tcpOutcomeIn(src.ns, ip, "80"); got != tc.want[i] {
					return fmt.Errorf("%s -> srv:80: %s, want %s", src.name, got, tc.want[i])
				}
			}
			return nil
		})
	}
}
