package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// --ipam=kubernetes: a node's pod CIDRs are spec.podCIDRs of its Node
// object, as the controller manager assigns them. The agent waits for
// them at start (its log says so), its pods get addresses inside them
// (both families), its CiliumNode announces them, another node routes
// them, and a restart finds them again.
func TestMultiNodeIPAMKubernetes(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	m := newMultiCluster(t, "web")
	v4, v6 := e2eutil.FreePodCIDR(t, e2eutil.PoolE2E, 24), e2eutil.FreePodCIDRv6(t)

	// The Node is registered, its CIDRs not assigned yet: the agent waits.
	m.kube.Apply(t, "apiVersion: v1\nkind: Node\nmetadata: {name: node-k}\n")
	k := m.newNode(t, "node-k", true, "--ipam", "kubernetes")
	started := make(chan error, 1)
	go func() { started <- k.agent.Start() }()
	t.Cleanup(func() { <-started }) // before the agent's stop
	e2eutil.Eventually(t, time.Minute, "node-k's agent waiting for its pod CIDRs", func() error {
		if log := k.agent.Log(100); !strings.Contains(log, "Waiting for this node's pod CIDRs") || !strings.Contains(log, "has no spec.podCIDRs yet") {
			return fmt.Errorf("agent log:\n%s", k.agent.Log(5))
		}
		return nil
	})
	m.kube.Kubectl(t, "patch", "node", "node-k", "-p", fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q,%q]}}`, v4, v4, v6))
	select {
	case err := <-started:
		started <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("node-k's agent did not start within 2 minutes of its Node getting pod CIDRs")
	}

	// Its pods get one address of each of the Node's CIDRs.
	kpod := k.pod(t, m, "web", "kpod")
	if !v4.Contains(kpod.IP()) || !kpod.IPv6().IsValid() || !v6.Contains(kpod.IPv6()) {
		t.Fatalf("pod on node-k got %s and %s, want addresses in the Node's %s and %s", kpod.IP(), kpod.IPv6(), v4, v6)
	}
	// Its CiliumNode announces them.
	want := fmt.Sprintf(`["%s","%s"]`, v4, v6)
	e2eutil.Eventually(t, time.Minute, "node-k's CiliumNode with the Node's pod CIDRs", func() error {
		out, _, err := m.kube.KubectlErr("get", "ciliumnode", "node-k", "-o", "jsonpath={.spec.ipam.podCIDRs}")
		if err != nil || out != want {
			return fmt.Errorf("spec.ipam.podCIDRs %q (%v), want %s", out, err, want)
		}
		return nil
	})
	out, err := execOut(bins.CLI, "--socket", k.agent.Socket, "status")
	if err != nil || !strings.Contains(out, v4.String()) {
		t.Errorf("membrane status on node-k: %v\n%s\nwant it to name %s", err, out, v4)
	}

	// Another node (local IPAM) routes node-k's IPv4 CIDR; pods talk.
	b := m.startNode(t, "node-b", true)
	waitRoute(t, b, v4, k.ip, true)
	bpod := b.pod(t, m, "web", "bpod")
	startServer(t, kpod, "8080")
	crossNodeTraffic(t, "to the pod of node-k", bpod, kpod)

	// A restart reads the Node again: same CIDRs, the pod keeps its
	// address, a new pod gets one from them.
	k.agent.Stop()
	k.agent.Restart()
	kpod2 := k.pod(t, m, "web", "kpod2")
	if !v4.Contains(kpod2.IP()) || !v6.Contains(kpod2.IPv6()) {
		t.Fatalf("pod on node-k after the restart got %s and %s, want addresses in %s and %s", kpod2.IP(), kpod2.IPv6(), v4, v6)
	}
	crossNodeTraffic(t, "to the pod of node-k after its agent restarted", bpod, kpod)
}
