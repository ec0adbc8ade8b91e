package policy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Policies in the shape of Cilium's examples/policies/kubernetes (the
// namespace and clusterwide ones, and the init endpoints' policy of
// examples/policies/l4), written for these tests. Each document goes
// through the policy language's parser into rows as the repository writes
// them, and each flow is traced: the verdict must be the one Cilium
// gives, which depends on how a namespaced or a clusterwide policy scopes
// its selectors.

// A pod's labels in namespace ns, with the labels Kubernetes mode gives it
// for its namespace's labels (io.cilium.k8s.namespace.labels.KEY).
func pod(ns string, kv ...string) []string {
	out := []string{"k8s:io.kubernetes.pod.namespace=" + ns}
	for _, s := range kv {
		out = append(out, "k8s:"+s)
	}
	return out
}

type exampleFlow struct {
	name     string
	src, dst []string
	port     string // PORT[/PROTOCOL], TCP by default
	verdict  string
	reason   string // the reason begins with it
}

var policyExamples = []struct {
	name  string
	doc   string
	flows []exampleFlow
}{
	{
		// Cilium: kubernetes/namespace/namespace-labels-policy.yaml. A peer
		// selector on a namespace label selects in every namespace that
		// has it, also outside the policy's own.
		name: "namespace labels",
		doc: `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: merchants-only
  namespace: bank
spec:
  endpointSelector:
    matchLabels:
      role: vault
  ingress:
  - fromEndpoints:
    - matchLabels:
        io.cilium.k8s.namespace.labels.guild: merchants
  egress:
  - toEndpoints:
    - matchLabels:
        io.cilium.k8s.namespace.labels.guild: merchants
`,
		flows: []exampleFlow{
			{"from a namespace labelled guild=merchants", pod("market", "io.cilium.k8s.namespace.labels.guild=merchants", "role=buyer"),
				pod("bank", "role=vault"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"from another namespace with the label, any port", pod("harbour", "io.cilium.k8s.namespace.labels.guild=merchants"),
				pod("bank", "role=vault"), "443/UDP", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"from a namespace labelled otherwise", pod("docks", "io.cilium.k8s.namespace.labels.guild=thieves", "role=buyer"),
				pod("bank", "role=vault"), "80", VerdictDenied, "ingress of the destination: default deny (turned on by rule 1/0)"},
			{"from the policy's own namespace, which lacks the label", pod("bank", "role=teller"),
				pod("bank", "role=vault"), "80", VerdictDenied, "ingress of the destination: default deny"},
			{"to a namespace labelled guild=merchants", pod("bank", "role=vault"),
				pod("market", "io.cilium.k8s.namespace.labels.guild=merchants", "role=buyer"), "8080", VerdictAllowed, "egress of the source: allowed by rule 1/0"},
			{"to a namespace labelled otherwise", pod("bank", "role=vault"),
				pod("docks", "io.cilium.k8s.namespace.labels.guild=thieves"), "8080", VerdictDenied, "egress of the source: default deny"},
			{"the rule applies in its namespace only", pod("docks", "io.cilium.k8s.namespace.labels.guild=thieves"),
				pod("market", "io.cilium.k8s.namespace.labels.guild=merchants", "role=vault"), "80", VerdictAllowed, "not enforced"},
		},
	},
	{
		// The same scoping in deny sections.
		name: "namespace labels in deny sections",
		doc: `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: no-thieves
  namespace: bank
spec:
  endpointSelector:
    matchLabels:
      role: vault
  enableDefaultDeny:
    ingress: false
    egress: false
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        k8s:io.cilium.k8s.namespace.labels.guild: thieves
  egressDeny:
  - toEndpoints:
    - matchExpressions:
      - key: io.cilium.k8s.namespace.labels.guild
        operator: In
        values: [thieves, smugglers]
`,
		flows: []exampleFlow{
			{"from a namespace labelled guild=thieves", pod("docks", "io.cilium.k8s.namespace.labels.guild=thieves"),
				pod("bank", "role=vault"), "80", VerdictDenied, "ingress of the destination: denied by rule 1/0"},
			{"from elsewhere", pod("market", "io.cilium.k8s.namespace.labels.guild=merchants"),
				pod("bank", "role=vault"), "80", VerdictAllowed, "ingress of the destination: allowed by (no-default-deny)"},
			{"to a namespace labelled guild=smugglers", pod("bank", "role=vault"),
				pod("cove", "io.cilium.k8s.namespace.labels.guild=smugglers"), "80", VerdictDenied, "egress of the source: denied by rule 1/0"},
		},
	},
	{
		// Cilium: kubernetes/namespace/namespace-policy.yaml. A peer naming
		// the namespace label selects in that namespace.
		name: "a peer in another namespace",
		doc: `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: readers-from-library, namespace: tower}
spec:
  endpointSelector: {matchLabels: {app: archive}}
  ingress:
  - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": library, app: reader}}]
`,
		flows: []exampleFlow{
			{"from the named namespace", pod("library", "app=reader"), pod("tower", "app=archive"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"the same labels in the policy's namespace", pod("tower", "app=reader"), pod("tower", "app=archive"), "80", VerdictDenied, "ingress of the destination: default deny"},
			{"other labels in the named namespace", pod("library", "app=clerk"), pod("tower", "app=archive"), "80", VerdictDenied, "ingress of the destination: default deny"},
		},
	},
	{
		// Cilium: kubernetes/namespace/isolate-namespaces.yaml. {} in a
		// namespaced policy is "every pod of this namespace".
		name: "namespace isolation",
		doc: `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: isolate, namespace: red}
spec: {endpointSelector: {}, ingress: [{fromEndpoints: [{}]}]}
---
{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
 "metadata": {"name": "isolate", "namespace": "blue"},
 "spec": {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]}}
`,
		flows: []exampleFlow{
			{"within red", pod("red", "app=a"), pod("red", "app=b"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"within blue", pod("blue", "app=a"), pod("blue", "app=b"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/1"},
			{"blue to red", pod("blue", "app=a"), pod("red", "app=b"), "80", VerdictDenied, "ingress of the destination: default deny (turned on by rule 1/0)"},
			{"red to a namespace without policy", pod("red", "app=a"), pod("green", "app=b"), "80", VerdictAllowed, "not enforced"},
		},
	},
	{
		// Cilium: kubernetes/namespace/kubedns-policy.yaml. Egress to a
		// named namespace.
		name: "egress to a named namespace",
		doc: `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-resolver, namespace: apps}
spec:
  endpointSelector: {}
  egress:
  - toEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": infra, k8s-app: resolver}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
`,
		flows: []exampleFlow{
			{"to the resolver of the named namespace", pod("apps", "app=shop"), pod("infra", "k8s-app=resolver"), "53/UDP", VerdictAllowed, "egress of the source: allowed by rule 1/0"},
			{"over TCP", pod("apps", "app=shop"), pod("infra", "k8s-app=resolver"), "53/TCP", VerdictDenied, "egress of the source: default deny"},
			{"to a resolver of the policy's own namespace", pod("apps", "app=shop"), pod("apps", "k8s-app=resolver"), "53/UDP", VerdictDenied, "egress of the source: default deny"},
		},
	},
	{
		// Cilium: kubernetes/clusterwide/clusterscope-policy.yaml. A
		// clusterwide policy's peers select pods of every namespace, and
		// nothing without a namespace.
		name: "clusterwide",
		doc: `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: keeper-from-courier
spec:
  description: couriers reach keepers, wherever they are
  endpointSelector:
    matchLabels:
      app: keeper
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: courier
`,
		flows: []exampleFlow{
			{"from another namespace", pod("post", "app=courier"), pod("vault", "app=keeper"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"within a namespace", pod("vault", "app=courier"), pod("vault", "app=keeper"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"from an endpoint without a namespace", []string{"container:app=courier"}, pod("vault", "app=keeper"), "80", VerdictDenied, "ingress of the destination: default deny (turned on by rule 1/0)"},
			{"from other labels", pod("post", "app=clerk"), pod("vault", "app=keeper"), "80", VerdictDenied, "ingress of the destination: default deny"},
			{"to a keeper without a namespace: the rule applies", pod("post", "app=clerk"), []string{"container:app=keeper"}, "80", VerdictDenied, "ingress of the destination: default deny"},
		},
	},
	{
		// Cilium: kubernetes/clusterwide/wildcard-from-endpoints.yaml. {}
		// in a clusterwide policy is every pod, not every identity.
		name: "clusterwide wildcard",
		doc: `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: resolver-from-pods
spec:
  endpointSelector:
    matchLabels:
      k8s:io.kubernetes.pod.namespace: infra
      k8s-app: resolver
  ingress:
  - fromEndpoints:
    - {}
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
`,
		flows: []exampleFlow{
			{"from a pod of any namespace", pod("apps", "app=shop"), pod("infra", "k8s-app=resolver"), "53/UDP", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"from an endpoint without a namespace", []string{"container:app=legacy"}, pod("infra", "k8s-app=resolver"), "53/UDP", VerdictDenied, "ingress of the destination: default deny"},
			{"from outside the cluster", []string{"cidr:198.51.100.7"}, pod("infra", "k8s-app=resolver"), "53/UDP", VerdictDenied, "ingress of the destination: default deny"},
		},
	},
	{
		// Cilium: l4/init.yaml. Peers of a clusterwide rule for init
		// endpoints are not narrowed to pods (an init endpoint's peers may
		// not have a namespace yet); those of any other rule are.
		name: "clusterwide rule for init endpoints",
		doc: `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: init-resolves
specs:
- endpointSelector:
    matchLabels:
      reserved.init: ""
  egress:
  - toEndpoints:
    - matchLabels:
        k8s-app: resolver
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
- endpointSelector:
    matchLabels:
      app: shop
  egress:
  - toEndpoints:
    - matchLabels:
        k8s-app: resolver
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
`,
		flows: []exampleFlow{
			{"init to a resolver without a namespace", []string{"reserved:init"}, []string{"container:k8s-app=resolver"}, "53/UDP", VerdictAllowed, "egress of the source: allowed by rule 1/0"},
			{"init to a resolver pod", []string{"reserved:init"}, pod("infra", "k8s-app=resolver"), "53/UDP", VerdictAllowed, "egress of the source: allowed by rule 1/0"},
			{"a pod to a resolver without a namespace", pod("apps", "app=shop"), []string{"container:k8s-app=resolver"}, "53/UDP", VerdictDenied, "egress of the source: default deny (turned on by rule 1/1)"},
			{"a pod to a resolver pod", pod("apps", "app=shop"), pod("infra", "k8s-app=resolver"), "53/UDP", VerdictAllowed, "egress of the source: allowed by rule 1/1"},
		},
	},
	{
		// The same peers in a plain rule (cilium policy import): as written.
		name: "plain rules",
		doc: `[{"endpointSelector": {"matchLabels": {"app": "keeper"}},
  "ingress": [{"fromEndpoints": [{}]}]}]`,
		flows: []exampleFlow{
			{"from an endpoint without a namespace", []string{"container:app=courier"}, pod("vault", "app=keeper"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
			{"from a pod", pod("post", "app=courier"), pod("vault", "app=keeper"), "80", VerdictAllowed, "ingress of the destination: allowed by rule 1/0"},
		},
	},
}

// importRows parses a policy document and returns its rules as the
// repository writes them under revision 1.
func importRows(t *testing.T, doc string) []*tables.PolicyRule {
	t.Helper()
	parsed, err := policyapi.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var rows []*tables.PolicyRule
	for i, pr := range parsed {
		rows = append(rows, &tables.PolicyRule{Key: fmt.Sprintf("1/%d", i), Revision: 1, Rule: pr.Rule,
			Namespace: pr.Namespace, Clusterwide: pr.Clusterwide(), Labels: pr.Labels})
	}
	return rows
}

func TestPolicyExamples(t *testing.T) {
	for _, ex := range policyExamples {
		t.Run(ex.name, func(t *testing.T) {
			e := startTestEngine(t, DefaultConfig)
			e.addIdentities(t, reserved()...)
			// The pods of the flows exist: each label set has an identity.
			next := tables.NumericIdentity(256)
			seen := map[string]bool{}
			for _, f := range ex.flows {
				for _, ss := range [][]string{f.src, f.dst} {
					ls, err := labels.ParseList(ss, labels.SourceK8s)
					if err != nil {
						t.Fatal(err)
					}
					if k := ls.String(); !seen[k] && ls[0].Source != labels.SourceCIDR && ls[0].Source != labels.SourceReserved {
						seen[k] = true
						e.addIdentities(t, &tables.Identity{ID: next, Labels: ls})
						next++
					}
				}
			}
			// An init endpoint, so that the trace evaluates its policy.
			e.addEndpoints(t, endpoint(1, tables.IdentityInit))
			e.addRules(t, importRows(t, ex.doc)...)
			e.sync(t)
			for _, f := range ex.flows {
				t.Run(f.name, func(t *testing.T) {
					port, proto, _ := strings.Cut(f.port, "/")
					var n uint16
					fmt.Sscan(port, &n)
					code, resp, body := e.trace(t, models.PolicyTraceRequest{SrcLabels: f.src, DstLabels: f.dst, Dport: n, Protocol: proto})
					if code != http.StatusOK {
						t.Fatalf("%d: %s", code, body)
					}
					if resp.Verdict != f.verdict || !strings.HasPrefix(resp.Reason, f.reason) {
						t.Errorf("%s -> %s %s: %s (%s), want %s (%s...)\n%s", f.src, f.dst, f.port, resp.Verdict, resp.Reason,
							f.verdict, f.reason, strings.Join(resp.Explanation, "\n"))
					}
				})
			}
		})
	}
}
