package api_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/policy/api"
)

func npDoc(ns, name, spec string) string {
	return `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
	  "metadata": {"name": "` + name + `", "namespace": "` + ns + `"}, "spec": ` + spec + `}`
}

// A NetworkPolicy becomes one rule of its namespace, with the upstream
// meaning: each case shows the rule (without labels and description).
func TestNetworkPolicyTranslation(t *testing.T) {
	// The peer selector parts the translation adds.
	const (
		inX    = `"k8s:io.kubernetes.pod.namespace":"x"`
		anyPod = `{"key":"k8s:io.kubernetes.pod.namespace","operator":"Exists"}`
	)
	cases := []struct {
		name, spec, want string
	}{
		{"deny all ingress: no rules", `{"podSelector": {}}`,
			`{"endpointSelector":{},"ingress":[{}]}`},
		{"deny all ingress: ingress []", `{"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]}`,
			`{"endpointSelector":{},"ingress":[{}]}`},
		{"deny all both ways", `{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}`,
			`{"endpointSelector":{},"ingress":[{}],"egress":[{}]}`},
		{"egress only: egress rules without policyTypes also isolate ingress", `{"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{}]}`,
			`{"endpointSelector":{"matchLabels":{"k8s:pod":"a"}},"ingress":[{}],"egress":[{"toEntities":["all"]}]}`},
		{"egress only, by policyTypes", `{"podSelector": {}, "policyTypes": ["Egress"]}`,
			`{"endpointSelector":{},"egress":[{}]}`},
		{"rules of a direction policyTypes leaves out are ignored, as upstream", `{"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"to": [{"podSelector": {}}]}]}`,
			`{"endpointSelector":{},"ingress":[{}]}`},
		{"ignored rules are not checked beyond decoding: a named port in them", `{"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"ports": [{"port": "http"}]}], "egress": [{}]}`,
			`{"endpointSelector":{},"egress":[{"toEntities":["all"]}]}`},
		{"allow all: an entry without from", `{"podSelector": {}, "ingress": [{}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEntities":["all"]}]}`},
		{"podSelector peer: same namespace", `{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}`,
			`{"endpointSelector":{"matchLabels":{"k8s:pod":"a"}},"ingress":[{"fromEndpoints":[{"matchLabels":{` + inX + `,"k8s:pod":"b"}}]}]}`},
		{"empty podSelector peer: every pod of the namespace", `{"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{"matchLabels":{` + inX + `}}]}]}`},
		{"empty namespaceSelector: every pod", `{"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{"matchExpressions":[` + anyPod + `]}]}]}`},
		{"namespaceSelector by label", `{"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{"matchLabels":{"k8s:io.cilium.k8s.namespace.labels.team":"a"},"matchExpressions":[` + anyPod + `]}]}]}`},
		{"namespaceSelector by the namespace-name label: the pod's namespace",
			`{"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{"matchExpressions":[{"key":"k8s:io.kubernetes.pod.namespace","operator":"NotIn","values":["x"]},` + anyPod + `]}]}]}`},
		{"namespaceSelector and podSelector in one peer: both",
			`{"podSelector": {}, "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}], "policyTypes": ["Egress"]}`,
			`{"endpointSelector":{},"egress":[{"toEndpoints":[{"matchLabels":{"k8s:io.kubernetes.pod.namespace":"y"},"matchExpressions":[{"key":"k8s:pod","operator":"In","values":["b","c"]}]}]}]}`},
		{"ipBlock with except", `{"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}], "policyTypes": ["Egress"]}`,
			`{"endpointSelector":{},"egress":[{"toCIDRSet":[{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}]}]}`},
		{"ports: default TCP, range, all ports of a protocol",
			`{"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP", "port": 8000, "endPort": 8100}, {"protocol": "SCTP"}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEntities":["all"],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"},{"port":"8000","endPort":8100,"protocol":"UDP"},{"port":"0","protocol":"SCTP"}]}]}]}`},
		{"peers and ports together", `{"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 443}]}]}`,
			`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{"matchLabels":{` + inX + `}}],"fromCIDRSet":[{"cidr":"192.0.2.0/24"}],"toPorts":[{"ports":[{"port":"443","protocol":"TCP"}]}]}]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules := mustParse(t, npDoc("x", "p", c.spec))
			if len(rules) != 1 {
				t.Fatalf("%d rules, want 1", len(rules))
			}
			pr := rules[0]
			if pr.Namespace != "x" || pr.Object == nil || pr.Object.String() != `NetworkPolicy "x/p"` {
				t.Errorf("namespace %q, object %v", pr.Namespace, pr.Object)
			}
			r := pr.Rule
			r.Labels, r.Description = nil, ""
			got, _ := json.Marshal(r)
			if string(got) != c.want {
				t.Errorf("rule\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

// The rule carries the labels Cilium derives from a NetworkPolicy, so a
// new version of the object replaces it and `policy delete` finds it.
func TestNetworkPolicyLabels(t *testing.T) {
	// As a typed client marshals the object (what a watcher hands over).
	doc := `{"kind":"NetworkPolicy","apiVersion":"networking.k8s.io/v1",
	  "metadata":{"name":"web","namespace":"prod","uid":"0a1b","resourceVersion":"7","generation":1,
	    "creationTimestamp":null,"managedFields":[{"manager":"kubectl","operation":"Apply"}]},
	  "spec":{"podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"ports":[{"protocol":"TCP","port":80}],
	    "from":[{"podSelector":{}}]}],"policyTypes":["Ingress"]}}`
	rules := mustParse(t, doc)
	want := []string{
		"k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
		"k8s:io.cilium.k8s.policy.name=web",
		"k8s:io.cilium.k8s.policy.namespace=prod",
		"k8s:io.cilium.k8s.policy.uid=0a1b",
	}
	if !slices.Equal(rules[0].Labels, want) {
		t.Errorf("labels %v, want %v", rules[0].Labels, want)
	}
	if !rules[0].Object.Owns(rules[0].Labels) {
		t.Error("the object does not own its rule")
	}
	cnp := api.ObjectRef{Kind: api.KindCNP, Namespace: "prod", Name: "web"}
	if cnp.Owns(rules[0].Labels) {
		t.Error("a CiliumNetworkPolicy of the same name owns the NetworkPolicy's rule")
	}
	if rules[0].Rule.Description != "NetworkPolicy prod/web" {
		t.Errorf("description %q", rules[0].Rule.Description)
	}
	// Without a namespace, the object is in "default"; in a list and a
	// stream, with CNPs.
	list := `{"apiVersion": "v1", "kind": "List", "items": [` + npDoc("a", "n1", `{"podSelector": {}}`) + `,
	  {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n2"}, "spec": {"podSelector": {}}}]}` +
		"\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n1, namespace: a}\nspec: {endpointSelector: {}}\n"
	rules = mustParse(t, list)
	var objs []string
	for _, r := range rules {
		objs = append(objs, r.Object.String())
	}
	if w := []string{`NetworkPolicy "a/n1"`, `NetworkPolicy "default/n2"`, `CiliumNetworkPolicy "a/n1"`}; !slices.Equal(objs, w) {
		t.Errorf("objects %v, want %v", objs, w)
	}
}

// What a NetworkPolicy may not say, or Membrane cannot enforce, is refused
// with the field named; nothing of the document is imported.
func TestNetworkPolicyRefused(t *testing.T) {
	cases := []struct {
		name, spec, want string
		unsupported      bool
	}{
		{"named port", `{"podSelector": {}, "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}`,
			`spec.egress[0].ports[0].port: named port "serve-80-tcp" is not supported: Membrane does not know the pods' container port names`, true},
		{"unknown field", `{"podSelector": {}, "ingress": [{"form": [{}]}]}`,
			`spec.ingress[0].form: unknown field (did you mean "from"?)`, false},
		{"unknown spec field", `{"podSelector": {}, "policyType": ["Ingress"]}`,
			`spec.policyType: unknown field (did you mean "policyTypes"?)`, false},
		{"unknown protocol", `{"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}`,
			`spec.ingress[0].ports[0].protocol: "ICMP" is not a NetworkPolicy protocol (want TCP, UDP or SCTP)`, false},
		{"port out of range", `{"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}`,
			`spec.ingress[0].ports[0].port: must be a port number (1-65535), not 70000`, false},
		{"endPort without port", `{"podSelector": {}, "ingress": [{"ports": [{"endPort": 90}]}]}`,
			`spec.ingress[0].ports[0].endPort: needs port`, false},
		{"endPort below port", `{"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}`,
			`spec.ingress[0].ports[0].endPort: endPort 80 is below port 90`, false},
		{"empty peer", `{"podSelector": {}, "ingress": [{"from": [{}]}]}`,
			`spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock`, false},
		{"ipBlock with a selector", `{"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}`,
			`spec.ingress[0].from[0].ipBlock: cannot be combined with podSelector or namespaceSelector`, false},
		{"except outside cidr", `{"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}`,
			`spec.ingress[0].from[0].ipBlock.except[0]: 192.168.0.0/16 is not inside cidr 10.0.0.0/8`, false},
		{"ipBlock without cidr", `{"podSelector": {}, "egress": [{"to": [{"ipBlock": {}}]}]}`,
			`spec.egress[0].to[0].ipBlock.cidr: required`, false},
		{"unknown policy type", `{"podSelector": {}, "policyTypes": ["ingress"]}`,
			`spec.policyTypes[0]: "ingress" is not a policy type (want Ingress or Egress)`, false},
		{"bad selector operator", `{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]}}`,
			`spec.podSelector.matchExpressions[0].operator: unknown operator "Equals"`, false},
		{"label key with a source", `{"podSelector": {"matchLabels": {"k8s:app": "a"}}}`,
			`spec.podSelector.matchLabels["k8s:app"]: a Kubernetes label key has no ':'`, false},
		{"wrong type", `{"podSelector": {}, "ingress": {"from": []}}`,
			`spec.ingress: must be a list, not an object`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules, err := api.Parse([]byte(npDoc("x", "p", c.spec)))
			if err == nil {
				t.Fatalf("accepted: %+v", rules)
			}
			if !strings.Contains(err.Error(), `NetworkPolicy "x/p": `+c.want) {
				t.Errorf("error %q\nwant it to contain %q", err, c.want)
			}
			if got := errors.Is(err, api.ErrUnsupported); got != c.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", got, c.unsupported)
			}
		})
	}
	// The apiVersion is checked.
	_, err := api.Parse([]byte(`{"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {}}`))
	if err == nil || !strings.Contains(err.Error(), `apiVersion: the string "extensions/v1beta1" is not supported for NetworkPolicy (want networking.k8s.io/v1)`) {
		t.Errorf("old apiVersion: %v", err)
	}
}
