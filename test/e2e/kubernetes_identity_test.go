package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
)

// membraneSystem is the namespace of the agents' Leases (identity claims,
// the garbage collector's lock); install/kubernetes creates it.
const membraneSystem = `
apiVersion: v1
kind: Namespace
metadata: {name: membrane-system}
`

// kubeCluster starts an API server with membrane-system and the
// namespaces named.
func kubeCluster(t *testing.T, namespaces ...string) *kubetest.Cluster {
	t.Helper()
	cluster := kubetest.Start(t)
	m := membraneSystem
	for _, ns := range namespaces {
		m += fmt.Sprintf("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)
	}
	cluster.Apply(t, m)
	return cluster
}

// kubePod applies a Pod object scheduled on node.
func kubePod(t *testing.T, cluster *kubetest.Cluster, ns, name, app, node string) {
	t.Helper()
	cluster.Apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {namespace: %s, name: %s, labels: {app: %s}}
spec:
  nodeName: %s
  containers: [{name: c, image: registry.k8s.io/pause:3.10}]
`, ns, name, app, node))
}

// Two agents on one API server, as two nodes of a cluster: pods with the
// same labels get the same identity on both, one CiliumIdentity stands for
// it (`kubectl get ciliumidentities` shows its namespace), each agent
// lists the cluster's identities, and the garbage collector deletes an
// identity once nothing uses it for the grace period, but never one in
// use: by a local endpoint (while pods come and go) or by a CiliumEndpoint
// of another node.
func TestKubernetesClusterIdentities(t *testing.T) {
	setup(t)
	cluster := kubeCluster(t, "shop")
	const grace = 3 * time.Second
	nodes := []string{"node-1", "node-2"}
	agents := make([]*agent, len(nodes))
	nets := make([]*network, len(nodes))
	for i, node := range nodes {
		agents[i] = startAgent(t, agentOpts{Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node,
			"--identity-gc-grace", grace.String()}})
		nets[i] = newNetwork(t, agents[i], "", nil)
	}
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumidentities.cilium.io", "crd/ciliumendpoints.cilium.io")

	// Both nodes start a pod of the same new label set at once.
	for i, node := range nodes {
		kubePod(t, cluster, "shop", "web-"+strconv.Itoa(i), "web", node)
	}
	webs := make([]*pod, len(nodes))
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i := range nodes {
		webs[i] = newPod(t, "shop", "web-"+strconv.Itoa(i))
		wg.Go(func() { errs[i] = nets[i].add(webs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD web-%d: %v", i, err)
		}
	}
	ids := make([]uint32, len(nodes))
	for i, a := range agents {
		waitIdentity(t, a, webs[i], "k8s:app=web", func(uint32) bool { return true })
		ids[i] = a.endpoint(webs[i].Attachment()).Identity.ID
	}
	web := ids[0]
	if ids[1] != web {
		t.Fatalf("same labels, different identities: node-1 %d, node-2 %d", ids[0], ids[1])
	}
	webName := strconv.FormatUint(uint64(web), 10)
	// One CiliumIdentity for the labels, its namespace in the column.
	out := cluster.Kubectl(t, "get", "ciliumidentities", "-l", "app=web")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(out, "NAMESPACE") ||
		!strings.HasPrefix(lines[1], webName+" ") || !strings.Contains(lines[1], "shop") {
		t.Errorf("kubectl get ciliumidentities -l app=web: want one, %s in namespace shop:\n%s", webName, out)
	}

	// node-1 alone runs db: node-2 lists it too, from the cluster, with no
	// local endpoint.
	kubePod(t, cluster, "shop", "db-0", "db", nodes[0])
	db0 := newPod(t, "shop", "db-0")
	if err := nets[0].add(db0); err != nil {
		t.Fatalf("ADD db-0: %v", err)
	}
	waitIdentity(t, agents[0], db0, "k8s:app=db", func(id uint32) bool { return id != web })
	db := agents[0].endpoint(db0.Attachment()).Identity.ID
	e2eutil.Eventually(t, 30*time.Second, "node-2 lists the cluster's identities", func() error {
		list, err := agents[1].Client.ListIdentities(ctxT(t))
		if err != nil {
			return err
		}
		found := map[uint32]string{}
		for _, id := range list {
			found[id.ID] = fmt.Sprintf("%s/%d", id.Source, id.Endpoints)
		}
		if found[web] != "cluster/1" || found[db] != "cluster/0" {
			return fmt.Errorf("web %d: %q, db %d: %q; want cluster/1, cluster/0", web, found[web], db, found[db])
		}
		return nil
	})

	// A CiliumEndpoint of a third node carries db: db stays in use when
	// its last local pod goes. tmp is used by nothing once its pod goes.
	cluster.Apply(t, fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {namespace: shop, name: db-elsewhere}
status: {id: 7, identity: {id: %d, labels: ["k8s:app=db"]}}
`, db))
	kubePod(t, cluster, "shop", "tmp-0", "tmp", nodes[1])
	tmp0 := newPod(t, "shop", "tmp-0")
	if err := nets[1].add(tmp0); err != nil {
		t.Fatalf("ADD tmp-0: %v", err)
	}
	waitIdentity(t, agents[1], tmp0, "k8s:app=tmp", func(id uint32) bool { return id != web && id != db })
	tmp := agents[1].endpoint(tmp0.Attachment()).Identity.ID
	for _, step := range []struct {
		n *network
		p *pod
	}{{nets[0], db0}, {nets[1], tmp0}} {
		if err := step.n.del(step.p); err != nil {
			t.Fatalf("DEL %s: %v", step.p.Name, err)
		}
	}
	exists := func(id uint32) bool {
		_, _, err := cluster.KubectlErr("get", "ciliumidentity", strconv.FormatUint(uint64(id), 10))
		return err == nil
	}
	// Meanwhile web's pods come and go, on both nodes, one at a time: web
	// stays in use throughout and is never deleted.
	churn := 0
	e2eutil.Eventually(t, 2*time.Minute, "unused identity "+strconv.Itoa(int(tmp))+" deleted", func() error {
		i := churn % len(nodes)
		churn++
		name := fmt.Sprintf("web-%d-%d", i, churn)
		kubePod(t, cluster, "shop", name, "web", nodes[i])
		p := newPod(t, "shop", name)
		if err := nets[i].add(p); err != nil {
			return fmt.Errorf("ADD %s: %v", name, err)
		}
		if ep := agents[i].endpoint(p.Attachment()); ep == nil || ep.Identity == nil || ep.Identity.ID != web {
			t.Errorf("churned web pod %s: endpoint %+v, want identity %d", name, ep, web)
		}
		if err := nets[i].del(p); err != nil {
			return fmt.Errorf("DEL %s: %v", name, err)
		}
		if !exists(web) {
			t.Fatalf("identity %d deleted while pods use it", web)
		}
		if exists(tmp) {
			return fmt.Errorf("identity %d still exists", tmp)
		}
		return nil
	})
	// The collector has run for longer than the grace: what is in use is
	// still there, and still resolves on both nodes.
	if !exists(web) || !exists(db) {
		t.Fatalf("in-use identities deleted: web %d exists %v, db %d (a CiliumEndpoint's) exists %v", web, exists(web), db, exists(db))
	}
	for i, a := range agents {
		if ep := a.endpoint(webs[i].Attachment()); ep == nil || ep.Identity == nil || ep.Identity.ID != web {
			t.Errorf("node %s: web-%d's endpoint %+v, want identity %d", nodes[i], i, ep, web)
		}
	}
	// A restarted agent gets its endpoints' numbers back from the cluster:
	// nothing renumbered, nothing duplicated.
	agents[1].Restart()
	waitIdentity(t, agents[1], webs[1], "k8s:app=web", func(id uint32) bool { return id == web })
	if out := cluster.Kubectl(t, "get", "ciliumidentities", "-l", "app=web", "-o", "name"); strings.Count(out, "ciliumidentity") != 1 {
		t.Errorf("CiliumIdentities of app=web after a restart: %q, want one", out)
	}

	// Once the CiliumEndpoint goes, db goes too.
	cluster.Kubectl(t, "delete", "ciliumendpoint", "-n", "shop", "db-elsewhere")
	e2eutil.Eventually(t, time.Minute, "identity "+strconv.Itoa(int(db))+" deleted once no CiliumEndpoint uses it", func() error {
		if exists(db) {
			return fmt.Errorf("still exists")
		}
		return nil
	})
	for i := range nodes {
		if err := nets[i].del(webs[i]); err != nil {
			t.Errorf("DEL web-%d: %v", i, err)
		}
	}
}

// A pod with a new label set while the API server is down: its identity
// needs the API server (a claim and a CiliumIdentity), so the ADD fails in
// bounded time (--sync-build-timeout) naming why, while a pod of known
// labels is served from the agent's cache; once the API server is back the
// runtime's retry of the ADD succeeds, with one CiliumIdentity.
func TestKubernetesIdentityAPIServerDown(t *testing.T) {
	setup(t)
	cluster := kubeCluster(t, "shop")
	const node = "node-1"
	for _, p := range []struct{ name, app string }{{"web", "web"}, {"web-late", "web"}, {"fresh", "fresh"}} {
		kubePod(t, cluster, "shop", p.name, p.app, node)
	}
	a := startAgent(t, agentOpts{Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}})
	waitKubernetes(t, a, "reachable, pods synced", func(k *models.KubernetesStatus) bool {
		return k.Reachable && cacheSynced(k, "pods") && cacheSynced(k, "namespaces") && cacheSynced(k, "ciliumidentities")
	})
	n := newNetwork(t, a, "", nil)
	web := newPod(t, "shop", "web")
	if err := n.add(web); err != nil {
		t.Fatalf("ADD web: %v", err)
	}
	waitIdentity(t, a, web, "k8s:app=web", func(uint32) bool { return true })
	webID := a.endpoint(web.Attachment()).Identity.ID

	cluster.StopAPIServer()
	waitKubernetes(t, a, "API server unreachable", func(k *models.KubernetesStatus) bool { return !k.Reachable })
	late := newPod(t, "shop", "web-late")
	if err := n.add(late); err != nil {
		t.Fatalf("ADD of a pod of known labels while the API server is down: %v", err)
	}
	waitIdentity(t, a, late, "k8s:app=web", func(id uint32) bool { return id == webID })
	fresh := newPod(t, "shop", "fresh")
	err := n.add(fresh)
	if err == nil || !strings.Contains(err.Error(), "identity not resolved: cluster identities unavailable") {
		t.Errorf("ADD of a pod with new labels while the API server is down: %v; want it to fail naming the identity allocation", err)
	}

	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	waitKubernetes(t, a, "API server reachable again", func(k *models.KubernetesStatus) bool { return k.Reachable })
	if err := n.add(fresh); err != nil {
		t.Fatalf("ADD of the new label set with the API server back: %v", err)
	}
	waitIdentity(t, a, fresh, "k8s:app=fresh", func(id uint32) bool { return id != webID })
	if out := cluster.Kubectl(t, "get", "ciliumidentities", "-l", "app=fresh", "-o", "name"); strings.Count(out, "ciliumidentity") != 1 {
		t.Errorf("CiliumIdentities of app=fresh: %q, want one", out)
	}
	for _, p := range []*pod{web, late, fresh} {
		if err := n.del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}
