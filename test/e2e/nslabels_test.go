package e2e

import (
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

// TestNamespaceLabelPolicy: a CiliumNetworkPolicy whose peers are selected
// by a namespace label (io.cilium.k8s.namespace.labels.KEY, as Cilium's
// examples/policies/kubernetes/namespace/namespace-labels-policy.yaml)
// reaches pods of every namespace with that label, and only them: the
// policy's own namespace is not added to the selector. Pods are real netns
// made through membrane-cni in three namespaces; their pods carry the
// labels of their namespace as io.cilium.k8s.namespace.labels.* pod
// labels, as a Kubernetes source would give them. Every connection's fate
// is also what `policy trace` says of the pods' identities.
func TestNamespaceLabelPolicy(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{Extra: []string{"--allow-localhost", "policy"}})
	e := &policyEnv{t: t, a: a, n: newNetwork(t, a, "", nil)}
	mk := func(ns, name, guild, role string) *pod {
		a.putPod(ns, name, map[string]string{"io.cilium.k8s.namespace.labels.guild": guild, "role": role})
		p := newPod(t, ns, name)
		if err := e.n.add(p); err != nil {
			t.Fatalf("ADD %s/%s: %v", ns, name, err)
		}
		// Its identity carries the namespace's label: the security-label
		// filter keeps it.
		e.waitRelabelled(p, "io.cilium.k8s.namespace.labels.guild", guild)
		startServer(t, p, "8080")
		return p
	}
	// The namespaces: treasury (guild=bankers) holds the vault; market is
	// labelled guild=merchants, docks guild=thieves.
	vault := mk("treasury", "vault", "bankers", "vault")
	teller := mk("treasury", "teller", "bankers", "teller")
	trader := mk("market", "trader", "merchants", "trader")
	pirate := mk("docks", "pirate", "thieves", "trader")

	e.importPolicy(`{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
	  "metadata": {"name": "vault-trades-with-merchants", "namespace": "treasury"},
	  "spec": {"endpointSelector": {"matchLabels": {"role": "vault"}},
	    "ingress": [{"fromEndpoints": [{"matchLabels": {"io.cilium.k8s.namespace.labels.guild": "merchants"}}],
	                 "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}],
	    "egress": [{"toEndpoints": [{"matchLabels": {"io.cilium.k8s.namespace.labels.guild": "merchants"}}]}]}}`)

	flows := []struct {
		what     string
		from, to *pod
		want     bool
	}{
		{"market (guild=merchants) -> treasury vault", trader, vault, true},
		{"docks (guild=thieves) -> treasury vault", pirate, vault, false},
		{"treasury's own teller -> vault (its namespace is not guild=merchants)", teller, vault, false},
		{"treasury vault -> market (guild=merchants)", vault, trader, true},
		{"treasury vault -> docks (guild=thieves)", vault, pirate, false},
		{"docks -> market (no policy selects either)", pirate, trader, true},
	}
	var facts []fact
	for _, f := range flows {
		facts = append(facts, tcpFact(f.what, f.from, f.to.IP().String(), "8080", f.want))
	}
	e.expect(facts...)

	// The trace of the same flows, with the labels of the identities the
	// pods really have.
	labelsOf := func(p *pod) []string {
		ep := a.endpoint(p.Attachment())
		if ep == nil || ep.Identity == nil {
			t.Fatalf("%s/%s: no endpoint with an identity", p.Namespace, p.Name)
		}
		return ep.Identity.Labels
	}
	for _, f := range flows {
		resp, err := a.Client.TracePolicy(ctxT(t), &models.PolicyTraceRequest{
			SrcLabels: labelsOf(f.from), DstLabels: labelsOf(f.to), Dport: 8080, Protocol: "TCP"})
		if err != nil {
			t.Fatalf("trace %s: %v", f.what, err)
		}
		want := models.PolicyVerdictDenied
		if f.want {
			want = models.PolicyVerdictAllowed
		}
		if resp.Verdict != want {
			t.Errorf("trace %s: %s (%s), want %s", f.what, resp.Verdict, resp.Reason, want)
		}
	}
}
