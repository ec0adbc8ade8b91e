package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// TestPodLifecycle is the endpoint story end to end: pods registered,
// attached with cnitool, given identities by their labels, visible in the
// pinned ipcache map, reachable, relabelled, and detached without a trace.
func TestPodLifecycle(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)

	if _, err := n.cnitool("status", &pod{Netns: "/var/run/netns/unused"}, ""); err != nil {
		t.Fatalf("STATUS with the agent up: %v", err)
	}

	web1 := newPod(t, "shop", "web-1")
	web2 := newPod(t, "shop", "web-2")
	db := newPod(t, "shop", "db-1")
	nginx := newPod(t, "default", "nginx") // attached the way podman does it
	pods := []*pod{web1, web2, db, nginx}

	// Register the pods: through the API, and through the CLI from a
	// Kubernetes manifest.
	a.putPod("shop", "web-1", map[string]string{"app": "web", "tier": "front"})
	a.putPod("shop", "web-2", map[string]string{"app": "web", "tier": "front"})
	a.putPod("default", "nginx", map[string]string{"app": "nginx"})
	manifest := filepath.Join(a.Dir, "db.yaml")
	os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-1\n  namespace: shop\n  labels:\n    app: db\n"), 0o644)
	if out, err := exec.Command(bins.CLI, "--socket", a.Socket, "pod", "apply", "-f", manifest).CombinedOutput(); err != nil {
		t.Fatalf("membrane pod apply: %v: %s", err, out)
	}

	for _, p := range pods[:3] {
		if err := n.add(p); err != nil {
			t.Fatal(err)
		}
	}
	// podman sends nothing but K8S_POD_NAME: the pod is default/NAME.
	if err := n.addWithArgs(nginx, "K8S_POD_NAME=nginx"); err != nil {
		t.Fatal(err)
	}

	// Ready, with the identity the labels call for.
	eps := map[*pod]*models.Endpoint{}
	for _, p := range pods {
		ep := a.endpoint(p.Attachment())
		if ep == nil {
			t.Fatalf("pod %s: no endpoint after ADD", p.Name)
		}
		if ep.State != models.StateReady {
			t.Errorf("pod %s: endpoint %d is %s right after a sync-build ADD, want ready", p.Name, ep.ID, ep.State)
		}
		if ep.Identity == nil || ep.Identity.ID < 256 {
			t.Fatalf("pod %s: endpoint %d has identity %+v, want a cluster identity (>= 256)", p.Name, ep.ID, ep.Identity)
		}
		if ep.K8sNamespace != p.Namespace || ep.K8sPodName != p.Name || ep.Addressing.IPv4 != p.IP().String() {
			t.Errorf("pod %s: endpoint says %s/%s at %s; ADD gave %s", p.Name, ep.K8sNamespace, ep.K8sPodName, ep.Addressing.IPv4, p.IP())
		}
		if !slices.Contains(ep.Identity.Labels, "k8s:io.kubernetes.pod.namespace="+p.Namespace) {
			t.Errorf("pod %s: identity labels %v lack the namespace", p.Name, ep.Identity.Labels)
		}
		eps[p] = ep
	}
	if eps[web1].Identity.ID != eps[web2].Identity.ID {
		t.Errorf("web-1 and web-2 have the same labels but identities %d and %d", eps[web1].Identity.ID, eps[web2].Identity.ID)
	}
	if eps[db].Identity.ID == eps[web1].Identity.ID || eps[nginx].Identity.ID == eps[web1].Identity.ID ||
		eps[nginx].Identity.ID == eps[db].Identity.ID {
		t.Errorf("different labels share an identity: web %d, db %d, nginx %d",
			eps[web1].Identity.ID, eps[db].Identity.ID, eps[nginx].Identity.ID)
	}
	if !slices.Contains(eps[web1].Identity.Labels, "k8s:app=web") || !slices.Contains(eps[nginx].Identity.Labels, "k8s:app=nginx") {
		t.Errorf("identity labels: web %v, nginx %v", eps[web1].Identity.Labels, eps[nginx].Identity.Labels)
	}

	// The datapath's view: ready means the ipcache entry is in the map.
	cache := a.IPCache()
	for _, p := range pods {
		if got, ok := cache[netip.PrefixFrom(p.IP(), 32)]; !ok || got != eps[p].Identity.ID {
			t.Errorf("ipcache[%s/32] = %d (present %v), want identity %d of pod %s", p.IP(), got, ok, eps[p].Identity.ID, p.Name)
		}
	}

	for _, p := range pods {
		gw := p.Result.IPs[0].Gateway.String()
		if err := ping(p, gw); err != nil {
			t.Error(err)
		}
		if err := n.check(p); err != nil {
			t.Errorf("CHECK: %v", err)
		}
	}

	// Pods reach each other through the host (no policy yet: all allowed).
	if err := ping(web1, db.IP().String()); err != nil {
		t.Error(err)
	}
	if err := ping(nginx, web2.IP().String()); err != nil {
		t.Error(err)
	}

	checkEndpointListJSON(t, a, pods)
	if ids := a.Identities(); ids[eps[web1].Identity.ID] != 2 || ids[eps[db].Identity.ID] != 1 {
		t.Errorf("endpoints per identity: %v; want web's (%d) used by 2 and db's (%d) by 1",
			ids, eps[web1].Identity.ID, eps[db].Identity.ID)
	}

	// Relabel web-2: its endpoint moves to a new identity, the map follows,
	// web-1 keeps its own.
	old := eps[web2].Identity.ID
	a.putPod("shop", "web-2", map[string]string{"app": "api", "tier": "front"})
	var moved uint32
	e2eutil.Eventually(t, 20*time.Second, "web-2's endpoint gets a new identity", func() error {
		ep := a.endpoint(web2.Attachment())
		if ep == nil || ep.Identity == nil || ep.Identity.ID == old || ep.State != models.StateReady {
			return fmt.Errorf("endpoint %+v", ep)
		}
		if !slices.Contains(ep.Identity.Labels, "k8s:app=api") {
			return fmt.Errorf("identity %d labels %v", ep.Identity.ID, ep.Identity.Labels)
		}
		moved = ep.Identity.ID
		return nil
	})
	e2eutil.Eventually(t, 20*time.Second, "ipcache follows web-2's new identity", func() error {
		if got := a.IPCache()[netip.PrefixFrom(web2.IP(), 32)]; got != moved {
			return fmt.Errorf("ipcache[%s/32] = %d, want %d", web2.IP(), got, moved)
		}
		return nil
	})
	if ep := a.endpoint(web1.Attachment()); ep.Identity.ID != old {
		t.Errorf("relabelling web-2 moved web-1 from identity %d to %d", old, ep.Identity.ID)
	}
	if err := n.check(web2); err != nil {
		t.Errorf("CHECK after relabel: %v", err)
	}

	// Detach. DEL removes veth, address, endpoint and map entry; a second
	// DEL, and containerd's final DEL with an empty CNI_NETNS, succeed.
	if err := n.del(web2); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, web2, web2.IP())
	// The router address lives on every pod's host veth; removing one
	// must not cut the others off.
	if err := ping(web1, web1.Result.IPs[0].Gateway.String()); err != nil {
		t.Errorf("after web-2's DEL: %v", err)
	}
	if err := n.del(web2); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if _, err := n.runPlugin("DEL", web2.ContainerID, "", nil); err != nil {
		t.Errorf("DEL with an empty CNI_NETNS after DEL: %v", err)
	}
	// A DEL that only ever sees an empty CNI_NETNS still cleans up fully.
	if _, err := n.runPlugin("DEL", nginx.ContainerID, "", nil); err != nil {
		t.Errorf("DEL with an empty CNI_NETNS: %v", err)
	}
	assertGone(t, a, nginx, nginx.IP())
	// And a netns that is already gone is no obstacle either.
	exec.Command("ip", "netns", "del", db.NetnsName).Run()
	if err := n.del(db); err != nil {
		t.Errorf("DEL after the netns was removed: %v", err)
	}
	assertGone(t, a, db, db.IP())
	if err := n.del(web1); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, web1, web1.IP())

	if eps := a.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints left: %+v", eps)
	}
	if ips := a.IPs(); len(ips) != 0 {
		t.Errorf("addresses left: %+v", ips)
	}
	for p, id := range a.IPCache() {
		if a.PodCIDR.Overlaps(p) && p.Bits() == 32 {
			t.Errorf("ipcache entry left: %s -> %d", p, id)
		}
	}
	e2eutil.Eventually(t, 10*time.Second, "every pod identity released", func() error {
		if ids := a.Identities(); len(ids) != 0 {
			return fmt.Errorf("identities left: %v", ids)
		}
		return nil
	})
}

// The runtime may run ADD before the pod's labels reach the agent (a
// watcher that lags). The endpoint waits for them, bounded: a pod that
// shows up in time gets its identity and ADD succeeds; one that never
// does fails the ADD, which leaves nothing behind.
func TestPodLabelsArriveLate(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{Extra: []string{"--pod-metadata-timeout=4s"}})
	n := newNetwork(t, a, "", nil)

	late := newPod(t, "shop", "late")
	done := make(chan error, 1)
	go func() { done <- n.add(late) }()
	e2eutil.Eventually(t, 10*time.Second, "the endpoint of the unregistered pod exists", func() error {
		if ep, err := a.Client.GetEndpoint(ctxT(t), late.Attachment().EndpointID()); err != nil {
			return err
		} else if ep.State != models.StateWaitingForIdentity {
			return fmt.Errorf("state %s, want %s", ep.State, models.StateWaitingForIdentity)
		}
		return nil
	})
	a.putPod("shop", "late", map[string]string{"app": "late"})
	if err := <-done; err != nil {
		t.Fatalf("ADD of a pod registered while it waited: %v", err)
	}
	ep := a.endpoint(late.Attachment())
	if ep.State != models.StateReady || !slices.Contains(ep.Identity.Labels, "k8s:app=late") {
		t.Errorf("endpoint %d: %s, identity %+v", ep.ID, ep.State, ep.Identity)
	}

	ghost := newPod(t, "shop", "ghost")
	start := time.Now()
	err := n.add(ghost)
	if err == nil {
		t.Fatal("ADD of a pod the agent never heard of succeeded")
	}
	t.Logf("ADD of an unknown pod failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "shop/ghost") {
		t.Errorf("the error should name the pod: %v", err)
	}
	assertGone(t, a, ghost, netipInvalid)
	assertNoIdleIdentities(t, a)
}

// checkEndpointListJSON: `membrane endpoint list -o json` shows what the
// issue promises for every endpoint.
func checkEndpointListJSON(t *testing.T, a *agent, pods []*pod) {
	t.Helper()
	out, err := exec.Command(bins.CLI, "--socket", a.Socket, "endpoint", "list", "-o", "json").Output()
	if err != nil {
		t.Errorf("membrane endpoint list -o json: %v", err)
		return
	}
	var list []map[string]any
	if err := json.Unmarshal(out, &list); err != nil {
		t.Errorf("membrane endpoint list -o json is not a JSON array: %v\n%s", err, out)
		return
	}
	if len(list) != len(pods) {
		t.Errorf("membrane endpoint list -o json lists %d endpoints, want %d", len(list), len(pods))
	}
	for _, ep := range list {
		for _, k := range []string{"id", "state", "container-id", "interface-name", "k8s-namespace", "k8s-pod-name", "labels", "identity", "addressing"} {
			if _, ok := ep[k]; !ok {
				t.Errorf("endpoint %v lacks %q in -o json", ep["id"], k)
			}
		}
		id, _ := ep["identity"].(map[string]any)
		if _, ok := id["id"]; !ok {
			t.Errorf("endpoint %v: identity %v lacks id", ep["id"], ep["identity"])
		}
		if _, ok := id["labels"]; !ok {
			t.Errorf("endpoint %v: identity %v lacks labels", ep["id"], ep["identity"])
		}
		addr, _ := ep["addressing"].(map[string]any)
		v4, _ := addr["ipv4"].(string)
		if ip, err := netip.ParseAddr(v4); err != nil || !a.PodCIDR.Contains(ip) {
			t.Errorf("endpoint %v: addressing %v, want an IPv4 address in %s", ep["id"], ep["addressing"], a.PodCIDR)
		}
	}
}
