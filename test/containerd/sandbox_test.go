package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// checkSandbox asserts what a running sandbox shows: the CRI status, the
// agent's endpoint (address, pod, netns, identity, state) and the host
// veth agree. It returns the endpoint.
func (e *env) checkSandbox(t *testing.T, p *pod) *models.Endpoint {
	t.Helper()
	if !e.Agent.PodCIDR.Contains(p.IP) {
		t.Errorf("%s: sandbox IP %s is outside the agent's pod CIDR %s", p.Name, p.IP, e.Agent.PodCIDR)
	}
	if !strings.HasPrefix(p.Netns, "/var/run/netns/cni-") {
		t.Errorf("%s: netns %q is not where containerd puts them (/var/run/netns/cni-*)", p.Name, p.Netns)
	}
	ep := e.Agent.endpointOf(p.ID)
	if ep == nil {
		t.Fatalf("%s: the agent has no endpoint for sandbox %s", p.Name, p.ID)
	}
	if ep.Addressing.IPv4 != p.IP.String() {
		t.Errorf("%s: endpoint address %s, CRI status says %s", p.Name, ep.Addressing.IPv4, p.IP)
	}
	// containerd's CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID)
	// reached the endpoint.
	if ep.K8sNamespace != p.Namespace || ep.K8sPodName != p.Name || ep.K8sUID != p.UID {
		t.Errorf("%s: endpoint names pod %s/%s uid %s, want %s/%s uid %s", p.Name, ep.K8sNamespace, ep.K8sPodName, ep.K8sUID, p.Namespace, p.Name, p.UID)
	}
	if ep.NetworkNamespace != p.Netns {
		t.Errorf("%s: endpoint netns %q, the sandbox's spec says %q", p.Name, ep.NetworkNamespace, p.Netns)
	}
	if ep.State != models.StateReady {
		t.Errorf("%s: endpoint %d is %s after RunPodSandbox returned, want ready (sync build)", p.Name, ep.ID, ep.State)
	}
	if ep.Identity == nil || ep.Identity.ID < 256 {
		t.Fatalf("%s: endpoint %d has no cluster identity: %+v", p.Name, ep.ID, ep.Identity)
	}
	for k, v := range p.Labels {
		if !slices.Contains(ep.Identity.Labels, "k8s:"+k+"="+v) {
			t.Errorf("%s: identity %d labels %v lack k8s:%s=%s", p.Name, ep.Identity.ID, ep.Identity.Labels, k, v)
		}
	}
	if _, err := netlink.LinkByName(plugin.HostVethName(p.ID, "eth0")); err != nil {
		t.Errorf("%s: host veth %s: %v", p.Name, plugin.HostVethName(p.ID, "eth0"), err)
	}
	return ep
}

// assertGone checks that nothing of a removed sandbox is left anywhere:
// CRI, endpoint, address, host veth, netns, mounts, cached CNI result.
func (e *env) assertGone(t *testing.T, pods ...*pod) {
	t.Helper()
	list, err := e.Ctrd.RT.ListPodSandbox(ctxT(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ips := e.Agent.IPs()
	for _, p := range pods {
		for _, s := range list.Items {
			if s.Id == p.ID {
				t.Errorf("%s: the CRI still lists sandbox %s (%s)", p.Name, p.ID, s.State)
			}
		}
		if ep := e.Agent.endpointOf(p.ID); ep != nil {
			t.Errorf("%s: endpoint %d (%s) is left behind", p.Name, ep.ID, ep.State)
		}
		for _, r := range ips {
			if r.IP == p.IP.String() || strings.HasPrefix(r.Owner, p.ID+":") {
				t.Errorf("%s: address %s is still allocated to %s", p.Name, r.IP, r.Owner)
			}
		}
		if _, err := netlink.LinkByName(plugin.HostVethName(p.ID, "eth0")); err == nil {
			t.Errorf("%s: host veth %s is left behind", p.Name, plugin.HostVethName(p.ID, "eth0"))
		}
		if _, err := os.Stat(p.Netns); err == nil {
			t.Errorf("%s: netns %s is left behind", p.Name, p.Netns)
		}
		for _, m := range mountsUnder(e.Dir) {
			if strings.Contains(m, p.ID) {
				t.Errorf("%s: mount %s is left behind", p.Name, m)
			}
		}
		if cached, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", "*-"+p.ID+"-*")); len(cached) > 0 {
			t.Errorf("%s: cached CNI results left: %v", p.Name, cached)
		}
	}
}

// assertNoIdentityReferences: every cluster identity the agent still holds
// has an endpoint (release follows the endpoints table, so it is polled).
func (e *env) assertNoIdentityReferences(t *testing.T) {
	t.Helper()
	e2eutil.Eventually(t, 10*time.Second, "identities without endpoints released", func() error {
		for id, n := range e.Agent.Identities() {
			if n == 0 {
				return fmt.Errorf("identity %d is held by no endpoint", id)
			}
		}
		return nil
	})
}

// TestSandboxLifecycle drives three pods the way kubelet does: their
// labels are known to the agent (PUT /v1/pod), RunPodSandbox gives each an
// address and an identity (same labels share one), they reach each other,
// and StopPodSandbox + RemovePodSandbox leave nothing behind.
func TestSandboxLifecycle(t *testing.T) {
	e := newEnv(t, envOpts{})
	web1 := e.newPod("shop", "web-1", map[string]string{"app": "web", "tier": "front"})
	web2 := e.newPod("shop", "web-2", map[string]string{"app": "web", "tier": "front"})
	db := e.newPod("shop", "db-0", map[string]string{"app": "db"})
	pods := []*pod{web1, web2, db}
	for _, p := range pods {
		e.mustRun(p)
	}

	eps := map[*pod]*models.Endpoint{}
	seen := map[string]string{}
	for _, p := range pods {
		eps[p] = e.checkSandbox(t, p)
		if other, dup := seen[p.IP.String()]; dup {
			t.Errorf("%s and %s share address %s", p.Name, other, p.IP)
		}
		seen[p.IP.String()] = p.Name
	}
	if a, b := eps[web1].Identity.ID, eps[web2].Identity.ID; a != b {
		t.Errorf("web-1 and web-2 have the same labels but identities %d and %d", a, b)
	}
	if a, b := eps[web1].Identity.ID, eps[db].Identity.ID; a == b {
		t.Errorf("web-1 and db-0 have different labels but share identity %d", a)
	}

	// containerd brought lo up itself (the conflist has no loopback), and
	// the pods reach each other through their veths.
	if !canPing(web1, "127.0.0.1") {
		t.Error("lo is not up in the sandbox: containerd's loopback did not run")
	}
	if !canPing(web1, db.IP.String()) || !canPing(db, web2.IP.String()) {
		t.Error("sandboxes do not reach each other without any policy")
	}

	// StopPodSandbox: DEL with the netns; the network is gone already.
	for _, p := range pods {
		if err := e.stop(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
		if ep := e.Agent.endpointOf(p.ID); ep != nil {
			t.Errorf("%s: endpoint %d survives StopPodSandbox", p.Name, ep.ID)
		}
		if _, err := netlink.LinkByName(plugin.HostVethName(p.ID, "eth0")); err == nil {
			t.Errorf("%s: host veth survives StopPodSandbox", p.Name)
		}
	}
	// RemovePodSandbox: a second DEL, with an empty netns, must succeed.
	for _, p := range pods {
		if err := e.remove(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
	}
	e.assertGone(t, pods...)
	e.assertNoIdentityReferences(t)
	if n := len(e.Agent.Identities()); n != 0 {
		t.Errorf("%d cluster identities remain with every pod removed", n)
	}
}

// unused keeps imports honest while the suite grows.
var _ = context.Background
var _ = unix.MNT_DETACH
