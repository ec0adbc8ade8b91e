package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
)

// The Kubernetes mode, as an operator sees it: an agent pointed at a real
// API server registers the cilium.io CRDs, takes the labels of the pods
// scheduled on its node, and of their namespaces, from the cluster, and an
// endpoint's identity follows `kubectl label pod` and `kubectl label
// namespace`. There is no kubelet: the test creates the Pod objects with
// spec.nodeName and plays the runtime with cnitool.
func TestKubernetesPodsAndNamespaces(t *testing.T) {
	setup(t)
	cluster := kubetest.Start(t)
	cluster.Apply(t, membraneSystem+`
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
`)
	const node = "node-1"
	a := startAgent(t, agentOpts{Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}})

	// The CRDs are the agent's to register.
	waitCRDs(t, cluster)

	pods := []struct{ ns, name, app, node string }{
		{"team-a", "web-1", "web", node},
		{"team-a", "web-2", "web", node},
		{"team-b", "web-3", "web", node},
		{"team-a", "elsewhere", "web", "node-2"}, // not this agent's
	}
	for _, p := range pods {
		kubePod(t, cluster, p.ns, p.name, p.app, p.node)
	}

	n := newNetwork(t, a, "", nil)
	eps := map[string]*pod{}
	for _, p := range pods[:3] {
		pd := newPod(t, p.ns, p.name)
		if err := n.add(pd); err != nil {
			t.Fatalf("ADD %s/%s: %v", p.ns, p.name, err)
		}
		eps[p.name] = pd
	}
	identity := func(name string) (uint32, []string) {
		ep := a.endpoint(eps[name].Attachment())
		if ep == nil || ep.Identity == nil {
			t.Fatalf("pod %s: no endpoint or no identity", name)
		}
		return ep.Identity.ID, ep.Identity.Labels
	}
	web1, labels1 := identity("web-1")
	web2, _ := identity("web-2")
	web3, _ := identity("web-3")
	if web1 != web2 || web1 == web3 {
		t.Errorf("identities web-1 %d, web-2 %d (same labels, same namespace), web-3 %d (other namespace): want 1 = 2 != 3", web1, web2, web3)
	}
	if !slices.Contains(labels1, "k8s:io.cilium.k8s.namespace.labels.team=a") || !slices.Contains(labels1, "k8s:app=web") {
		t.Errorf("web-1's security labels %v lack its namespace's or its own", labels1)
	}

	// Only this node's pods are in the pods table.
	if _, err := a.Client.GetPod(ctxT(t), "team-a", "elsewhere"); err == nil {
		t.Errorf("the agent of %s took a pod scheduled on node-2", node)
	}
	if p, err := a.Client.GetPod(ctxT(t), "team-a", "web-1"); err != nil || p.Source != "k8s" {
		t.Errorf("pod team-a/web-1: %+v, %v; want source k8s", p, err)
	}

	// kubectl label pod: the endpoint moves to the identity of its new labels.
	cluster.Kubectl(t, "label", "pod", "-n", "team-a", "web-2", "app=api", "--overwrite")
	waitIdentity(t, a, eps["web-2"], "k8s:app=api", func(id uint32) bool { return id != web1 })

	// kubectl label namespace: every pod of it moves.
	cluster.Kubectl(t, "label", "namespace", "team-a", "team=x", "--overwrite")
	waitIdentity(t, a, eps["web-1"], "k8s:io.cilium.k8s.namespace.labels.team=x", func(id uint32) bool { return id != web1 })
	waitIdentity(t, a, eps["web-2"], "k8s:io.cilium.k8s.namespace.labels.team=x", func(uint32) bool { return true })
	if id, _ := identity("web-3"); id != web3 {
		t.Errorf("web-3 (namespace team-b) moved from %d to %d when team-a was relabelled", web3, id)
	}

	for _, p := range eps {
		if err := n.del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}

// waitIdentity waits (bounded) until the pod's endpoint is ready with an
// identity that has label and satisfies ok.
func waitIdentity(t *testing.T, a *agent, p *pod, label string, ok func(uint32) bool) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, fmt.Sprintf("pod %s/%s ready with %s", p.Namespace, p.Name, label), func() error {
		ep := a.endpoint(p.Attachment())
		switch {
		case ep == nil:
			return fmt.Errorf("no endpoint")
		case ep.State != models.StateReady || ep.Identity == nil:
			return fmt.Errorf("state %s", ep.State)
		case !slices.Contains(ep.Identity.Labels, label) || !ok(ep.Identity.ID):
			return fmt.Errorf("identity %d %v", ep.Identity.ID, ep.Identity.Labels)
		}
		return nil
	})
}

// waitCRDs waits (bounded) until the agent has registered the cilium.io
// CRDs and they are established.
func waitCRDs(t *testing.T, cluster *kubetest.Cluster) {
	t.Helper()
	crds := []string{"ciliumendpoints", "ciliumidentities", "ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies", "ciliumnodes"}
	e2eutil.Eventually(t, time.Minute, "cilium.io CRDs established", func() error {
		out, _, err := cluster.KubectlErr("get", "crd", "-o", "name")
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if !strings.Contains(out, crd+".cilium.io") {
				return fmt.Errorf("no CRD %s.cilium.io in %q", crd, out)
			}
		}
		return nil
	})
	for _, crd := range crds {
		cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd+".cilium.io")
	}
}
