package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// The CiliumEndpoints the agent keeps for its node's pods, as an operator
// sees them with kubectl and as the API server counts the writes:
//
//   - `kubectl get cep -A` shows each pod's endpoint ID, identity ID (the
//     ones `membrane endpoint list` shows), enforcement, state ready and
//     addresses; pods with the same labels share an identity; the CEP is
//     owned by its Pod;
//   - one ADDED per pod start, a MODIFIED only for a visible change (a
//     policy that makes ingress enforcing), one DELETED per CNI DEL;
//   - a ghost CEP of this node (no endpoint) is pruned at start, another
//     node's is left alone;
//   - an agent restart leaves the CEPs as they are; a ghost made while it
//     was away is pruned; a CEP naming a stale owner is repaired; a pod
//     deleted and recreated with the same name meanwhile gets a CEP owned
//     by the new Pod;
//   - with the API server down, CNI DEL and ADD work, and the CEPs
//     converge once it is back.
func TestKubernetesCiliumEndpoints(t *testing.T) {
	setup(t)
	cluster := kubeCluster(t, "shop")
	const node = "node-1"
	cluster.Kubectl(t, "apply", "-f", "../../install/kubernetes/crds")
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumendpoints.cilium.io")
	for _, p := range []struct{ name, app string }{{"web-1", "web"}, {"web-2", "web"}, {"db", "db"}, {"late", "web"}} {
		kubePod(t, cluster, "shop", p.name, p.app, node)
	}
	// A ghost of this node (its pod never ran here) and another node's CEP.
	for _, g := range []struct{ name, node string }{{"ghost", node}, {"foreign", "node-2"}} {
		cluster.Apply(t, fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {namespace: shop, name: %s, labels: {membrane.io/node: %s}}
status: {id: 4000, state: ready}
`, g.name, g.node))
	}

	cs, err := k8sclient.New(cluster.Kubeconfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	rec := recordCEPEvents(t, cs)

	a := startAgent(t, agentOpts{DualStack: true, Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}})
	waitCEPGone(t, cs, "shop", "ghost")
	if _, err := cs.CiliumV2.CiliumEndpoints("shop").Get(ctxT(t), "foreign", metav1.GetOptions{}); err != nil {
		t.Errorf("another node's CEP: %v; want it left alone", err)
	}

	// Three pods start.
	n := newNetwork(t, a, "", nil)
	pods := map[string]*pod{}
	for name, app := range map[string]string{"web-1": "web", "web-2": "web", "db": "db"} {
		p := newPod(t, "shop", name)
		addK8sPod(t, cluster, n, p)
		waitIdentity(t, a, p, "k8s:app="+app, func(uint32) bool { return true })
		pods[name] = p
	}
	for _, p := range pods {
		waitCEPMatches(t, cluster, cs, a, p)
	}
	rows := kubectlCEPs(t, cluster)
	for name, p := range pods {
		ep := a.endpoint(p.Attachment())
		want := map[string]string{
			"ENDPOINT ID": strconv.Itoa(int(ep.ID)), "IDENTITY ID": strconv.Itoa(int(ep.Identity.ID)),
			"INGRESS ENFORCEMENT": "non-enforcing", "EGRESS ENFORCEMENT": "non-enforcing",
			"ENDPOINT STATE": "ready", "IPV4": p.IP().String(), "IPV6": p.IPv6().String(),
		}
		if got := rows["shop/"+name]; !mapContains(got, want) {
			t.Errorf("kubectl get cep -A, shop/%s: %v, want %v", name, got, want)
		}
	}
	if w1, w2, db := rows["shop/web-1"]["IDENTITY ID"], rows["shop/web-2"]["IDENTITY ID"], rows["shop/db"]["IDENTITY ID"]; w1 != w2 || w1 == db {
		t.Errorf("identity IDs web-1 %s, web-2 %s (same labels), db %s: want web-1 = web-2 != db", w1, w2, db)
	}

	// A visible change: a policy selects db for ingress.
	if _, err := a.Client.ImportPolicy(ctxT(t), "application/yaml", []byte(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
`)); err != nil {
		t.Fatal(err)
	}
	waitCEP(t, cs, "shop", "db", func(c *v2.CiliumEndpoint) error {
		if s := c.Status.Policy.Ingress.State; s != v2.PolicyEnforcing {
			return fmt.Errorf("ingress %s", s)
		}
		return nil
	})

	// CNI DEL: the CEP goes.
	if err := n.del(pods["web-2"]); err != nil {
		t.Fatal(err)
	}
	waitCEPGone(t, cs, "shop", "web-2")
	delete(pods, "web-2")

	rec.expect(t, "after the pods started, a policy and a DEL", map[string]string{
		"ghost": "DELETED", "web-1": "ADDED", "web-2": "ADDED DELETED", "db": "ADDED MODIFIED",
	})

	// Restart. Meanwhile a ghost appears and web-1 is deleted and
	// recreated (a new UID): its CEP names the old Pod.
	a.Stop()
	oldUID := podUID(t, cluster, "shop", "web-1")
	cluster.Apply(t, `
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {namespace: shop, name: ghost-2, labels: {membrane.io/node: node-1}}
status: {id: 4001, state: ready}
`)
	// No kubelet confirms the deletion: force it.
	cluster.Kubectl(t, "delete", "pod", "-n", "shop", "web-1", "--grace-period=0", "--force")
	kubePod(t, cluster, "shop", "web-1", "web", node)
	newUID := podUID(t, cluster, "shop", "web-1")
	// db's CEP names a stale owner (as if its pod had been recreated
	// while its endpoint stayed): the agent repairs it in place.
	cluster.Kubectl(t, "patch", "ciliumendpoint", "-n", "shop", "db", "--type=json",
		"-p", `[{"op":"replace","path":"/metadata/ownerReferences/0/uid","value":"00000000-0000-0000-0000-00000000dead"}]`)
	if newUID == oldUID {
		t.Fatalf("recreated pod kept UID %s", oldUID)
	}
	a.Restart()
	waitCEPGone(t, cs, "shop", "ghost-2")
	waitCEPMatches(t, cluster, cs, a, pods["db"])
	// The runtime replaces web-1's sandbox: DEL of the old one, ADD of
	// the new, whose CEP is owned by the new Pod.
	if err := n.del(pods["web-1"]); err != nil {
		t.Fatal(err)
	}
	web1 := newPod(t, "shop", "web-1")
	addK8sPod(t, cluster, n, web1)
	pods["web-1"] = web1
	waitCEPMatches(t, cluster, cs, a, web1)
	rec.expect(t, "after the restart", map[string]string{
		"ghost": "DELETED", "web-2": "ADDED DELETED", "ghost-2": "ADDED DELETED",
		// db: the test's patch, the agent's repair.
		"db": "ADDED MODIFIED MODIFIED MODIFIED",
		// web-1: its CEP owned by the old Pod goes, the new one comes.
		"web-1": "ADDED DELETED ADDED",
	})
	rec.stop()

	// The API server goes down; db is deleted and late added meanwhile.
	lateUID := podUID(t, cluster, "shop", "late")
	cluster.StopAPIServer()
	waitKubernetes(t, a, "API server unreachable", func(k *models.KubernetesStatus) bool { return !k.Reachable })
	if err := n.del(pods["db"]); err != nil {
		t.Fatalf("DEL with the API server down: %v", err)
	}
	delete(pods, "db")
	late := newPod(t, "shop", "late")
	if err := n.addWithArgs(late, k8sPodArgs(late, lateUID)); err != nil {
		t.Fatalf("ADD with the API server down: %v", err)
	}
	pods["late"] = late
	// Its CEP cannot be written: that shows, and the agent stays healthy
	// (CNI STATUS keeps passing).
	waitKubernetes(t, a, "a failed CEP write reported", func(k *models.KubernetesStatus) bool {
		for _, c := range k.Caches {
			if c.Name == "ciliumendpoints" {
				return !c.Synced && c.LastError != ""
			}
		}
		return false
	})
	if st, err := a.Client.Healthz(ctxT(t)); err != nil || !st.Healthy {
		t.Errorf("agent health while CEP writes fail: %+v, %v; want healthy", st, err)
	}
	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	waitCEPGone(t, cs, "shop", "db")
	waitCEPMatches(t, cluster, cs, a, late)

	// This node's CEPs are exactly its pods'.
	list, err := cs.CiliumV2.CiliumEndpoints("").List(ctxT(t), metav1.ListOptions{LabelSelector: "membrane.io/node=" + node})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range list.Items {
		got = append(got, c.Name)
	}
	if want := slices.Sorted(maps.Keys(pods)); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("CEPs of %s: %v, want %v", node, got, want)
	}
	for _, p := range pods {
		if err := n.del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
	for name := range pods {
		waitCEPGone(t, cs, "shop", name)
	}
	if log := a.Log(1 << 20); strings.Contains(log, "level=ERROR") {
		t.Logf("agent errors:\n%s", grepLines(log, "level=ERROR"))
	}
}

func podUID(t *testing.T, c *kubetest.Cluster, ns, name string) string {
	t.Helper()
	return strings.TrimSpace(c.Kubectl(t, "get", "pod", "-n", ns, name, "-o", "jsonpath={.metadata.uid}"))
}

// k8sPodArgs are the CNI_ARGS the runtime passes for a Pod object: its
// real UID.
func k8sPodArgs(p *pod, uid string) string {
	return e2eutil.PodCNIArgsUID(p.Namespace, p.Name, p.ContainerID, uid)
}

// addK8sPod runs ADD for the Pod object p stands for.
func addK8sPod(t *testing.T, c *kubetest.Cluster, n *network, p *pod) {
	t.Helper()
	if err := n.addWithArgs(p, k8sPodArgs(p, podUID(t, c, p.Namespace, p.Name))); err != nil {
		t.Fatalf("ADD %s/%s: %v", p.Namespace, p.Name, err)
	}
}

func waitCEP(t *testing.T, cs *k8sclient.Clientset, ns, name string, ok func(*v2.CiliumEndpoint) error) {
	t.Helper()
	e2eutil.Eventually(t, time.Minute, fmt.Sprintf("CEP %s/%s", ns, name), func() error {
		c, err := cs.CiliumV2.CiliumEndpoints(ns).Get(ctxT(t), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return ok(c)
	})
}

func waitCEPGone(t *testing.T, cs *k8sclient.Clientset, ns, name string) {
	t.Helper()
	e2eutil.Eventually(t, time.Minute, fmt.Sprintf("CEP %s/%s deleted", ns, name), func() error {
		_, err := cs.CiliumV2.CiliumEndpoints(ns).Get(ctxT(t), name, metav1.GetOptions{})
		if k8serrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// waitCEPMatches waits until p's CEP says what the agent says of p's
// endpoint (ID, identity, state, addresses) and is owned by p's Pod.
func waitCEPMatches(t *testing.T, c *kubetest.Cluster, cs *k8sclient.Clientset, a *agent, p *pod) {
	t.Helper()
	uid := podUID(t, c, p.Namespace, p.Name)
	waitCEP(t, cs, p.Namespace, p.Name, func(c *v2.CiliumEndpoint) error {
		ep := a.endpoint(p.Attachment())
		switch {
		case ep == nil || ep.Identity == nil:
			return fmt.Errorf("no endpoint with an identity")
		case len(c.OwnerReferences) != 1 || c.OwnerReferences[0].Kind != "Pod" || string(c.OwnerReferences[0].UID) != uid:
			return fmt.Errorf("owners %+v, want Pod %s", c.OwnerReferences, uid)
		case c.Status.ID != int64(ep.ID) || c.Status.Identity == nil || c.Status.Identity.ID != int64(ep.Identity.ID):
			return fmt.Errorf("status %+v, want endpoint %d identity %d", c.Status, ep.ID, ep.Identity.ID)
		case c.Status.State != "ready":
			return fmt.Errorf("state %s", c.Status.State)
		case c.Status.Networking == nil || len(c.Status.Networking.Addressing) != 1 ||
			c.Status.Networking.Addressing[0].IPv4 != addrString(p.IP()) || c.Status.Networking.Addressing[0].IPv6 != addrString(p.IPv6()) ||
			c.Status.Networking.NodeIP != "node-1":
			return fmt.Errorf("networking %+v, want %s %s on node-1", c.Status.Networking, p.IP(), p.IPv6())
		case !slices.Equal(c.Status.Identity.Labels, ep.Identity.Labels):
			return fmt.Errorf("identity labels %v, want %v", c.Status.Identity.Labels, ep.Identity.Labels)
		}
		return nil
	})
}

// kubectlCEPs is `kubectl get ciliumendpoints -A` as rows by
// namespace/name, each a map of column header to value (the columns are
// cut at the header's offsets: an empty cell stays empty).
func kubectlCEPs(t *testing.T, c *kubetest.Cluster) map[string]map[string]string {
	t.Helper()
	out := c.Kubectl(t, "get", "ciliumendpoints", "-A")
	t.Logf("kubectl get ciliumendpoints -A:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	cols := []string{"NAMESPACE", "NAME", "ENDPOINT ID", "IDENTITY ID", "INGRESS ENFORCEMENT", "EGRESS ENFORCEMENT",
		"VISIBILITY POLICY", "ENDPOINT STATE", "IPV4", "IPV6"}
	var at []int
	from := 0
	for _, col := range cols {
		i := strings.Index(header[from:], col)
		if i < 0 {
			t.Fatalf("kubectl get ciliumendpoints -A: no column %q in\n%s", col, out)
		}
		at = append(at, from+i)
		from += i + len(col)
	}
	rows := map[string]map[string]string{}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for i, col := range cols {
			end := len(line)
			if i+1 < len(at) {
				end = min(at[i+1], len(line))
			}
			if at[i] < len(line) {
				row[col] = strings.TrimSpace(line[at[i]:end])
			}
		}
		rows[row["NAMESPACE"]+"/"+row["NAME"]] = row
	}
	return rows
}

// addrString is a's text, "" if a is not an address (a pod without IPv6).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func mapContains(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// cepEvents records the watch events of every CEP of namespace shop, by
// name, as the API server sends them: what the agent's writes cost.
type cepEvents struct {
	mu     sync.Mutex
	events map[string][]string
	cancel func()
	done   chan struct{}
}

func recordCEPEvents(t *testing.T, cs *k8sclient.Clientset) *cepEvents {
	t.Helper()
	list, err := cs.CiliumV2.CiliumEndpoints("shop").List(ctxT(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CiliumV2.CiliumEndpoints("shop").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &cepEvents{events: map[string][]string{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range w.ResultChan() {
			c, ok := ev.Object.(*v2.CiliumEndpoint)
			if !ok || ev.Type == watch.Bookmark {
				continue
			}
			r.mu.Lock()
			r.events[c.Name] = append(r.events[c.Name], string(ev.Type))
			r.mu.Unlock()
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *cepEvents) stop() {
	r.cancel()
	<-r.done
}

// expect checks the events of each CEP (space-separated types, in order);
// CEPs not named must have none.
func (r *cepEvents) expect(t *testing.T, when string, want map[string]string) {
	t.Helper()
	// The watch trails the reads the test waited on: wait for the
	// expected events, then compare exactly.
	e2eutil.Eventually(t, 30*time.Second, "CEP watch events "+when, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for name, w := range want {
			if got := strings.Join(r.events[name], " "); len(got) < len(w) {
				return fmt.Errorf("%s: %q so far, want %q", name, got, w)
			}
		}
		return nil
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, evs := range r.events {
		if got := strings.Join(evs, " "); got != want[name] {
			t.Errorf("%s: watch events of CEP shop/%s: %q, want %q", when, name, got, want[name])
		}
	}
}
