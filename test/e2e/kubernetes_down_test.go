package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// The API server goes away and comes back, as in a control-plane upgrade:
// the node's pods keep their connectivity and policy, `membrane status`
// says the API server is unreachable (and the agent stays healthy, so the
// runtime keeps starting pods), a pod whose Pod object the agent already
// has still gets its network, and once the API server is back the
// watchers resume without a restart: a `kubectl label` made after the
// outage moves the pod's identity.
func TestKubernetesAPIServerDown(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	cluster := kubeCluster(t, "shop")
	const node = "node-1"
	for _, p := range []struct{ name, app string }{{"server", "server"}, {"client", "client"}, {"other", "other"}, {"late", "client"}} {
		kubePod(t, cluster, "shop", p.name, p.app, node)
	}
	a := startAgent(t, agentOpts{Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}})
	waitKubernetes(t, a, "reachable, pods synced", func(k *models.KubernetesStatus) bool {
		return k.Reachable && cacheSynced(k, "pods") && cacheSynced(k, "namespaces")
	})

	n := newNetwork(t, a, "", nil)
	pods := map[string]*pod{}
	for _, name := range []string{"server", "client", "other"} {
		p := newPod(t, "shop", name)
		if err := n.add(p); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		pods[name] = p
	}
	server, client, other := pods["server"], pods["client"], pods["other"]
	startServer(t, server, "8080")
	if _, err := a.Client.ImportPolicy(ctxT(t), "application/yaml", []byte(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
`)); err != nil {
		t.Fatal(err)
	}
	sip := server.IP().String()
	expectVerdicts := func(when string) {
		t.Helper()
		e2eutil.Eventually(t, 30*time.Second, "policy enforced "+when, func() error {
			if !canTCP(client, sip, "8080") {
				return fmt.Errorf("client -> server:8080 dropped")
			}
			if canTCP(other, sip, "8080") {
				return fmt.Errorf("other -> server:8080 passed")
			}
			return nil
		})
	}
	expectVerdicts("before the outage")

	cluster.StopAPIServer()
	waitKubernetes(t, a, "API server unreachable", func(k *models.KubernetesStatus) bool {
		return !k.Reachable && k.LastError != ""
	})
	st, err := a.Client.Healthz(ctxT(t))
	if err != nil || !st.Healthy {
		t.Errorf("agent health while the API server is down: %+v, %v; want healthy (its pods are served)", st, err)
	}
	out, err := exec.Command(bins.CLI, "--socket", a.Socket, "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "UNREACHABLE") {
		t.Errorf("membrane status while the API server is down: %v\n%s\nwant it to say UNREACHABLE", err, out)
	}
	expectVerdicts("while the API server is down")

	// The Pod object of "late" is in the agent's cache and its identity
	// (app=client, the client's) exists: ADD works without the API server.
	late := newPod(t, "shop", "late")
	if err := n.add(late); err != nil {
		t.Fatalf("ADD of a cached pod while the API server is down: %v", err)
	}
	waitIdentity(t, a, late, "k8s:app=client", func(uint32) bool { return true })
	if !canTCP(late, sip, "8080") {
		t.Errorf("late (app=client) -> server:8080 dropped while the API server is down")
	}

	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	waitKubernetes(t, a, "API server reachable again", func(k *models.KubernetesStatus) bool { return k.Reachable })
	// The watchers resume by themselves: a relabel made now reaches the agent.
	cluster.Kubectl(t, "label", "pod", "-n", "shop", "other", "app=client", "--overwrite")
	waitIdentity(t, a, other, "k8s:app=client", func(uint32) bool { return true })
	e2eutil.Eventually(t, 30*time.Second, "relabelled pod allowed", func() error {
		if !canTCP(other, sip, "8080") {
			return fmt.Errorf("other (now app=client) -> server:8080 dropped")
		}
		return nil
	})
	for _, p := range []*pod{server, client, other, late} {
		if err := n.del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}

// waitKubernetes waits (bounded) until the agent's status of the
// Kubernetes connection satisfies ok.
func waitKubernetes(t *testing.T, a *agent, what string, ok func(*models.KubernetesStatus) bool) {
	t.Helper()
	e2eutil.Eventually(t, 60*time.Second, what, func() error {
		st, err := a.Client.Healthz(ctxT(t))
		switch {
		case err != nil:
			return err
		case st.Kubernetes == nil:
			return fmt.Errorf("no kubernetes section in the status")
		case !ok(st.Kubernetes):
			return fmt.Errorf("kubernetes status %+v", *st.Kubernetes)
		}
		return nil
	})
}

func cacheSynced(k *models.KubernetesStatus, name string) bool {
	for _, c := range k.Caches {
		if c.Name == name {
			return c.Synced
		}
	}
	return false
}
