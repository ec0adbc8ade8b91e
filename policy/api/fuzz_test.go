package api_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/membrane-net/membrane/policy/api"
)

// FuzzParse: Parse never panics; whatever it accepts validates, and is a
// fixed point: the accepted rules, written back as a JSON list of rules,
// parse again to the same rules.
//
//	go test ./policy/api -run '^$' -fuzz FuzzParse -fuzztime 60s
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "fe"}}], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}`,
		`[{"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}], "toPorts": [{"ports": [{"port": "8000", "endPort": 8100}]}]}]}]`,
		"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: b}\nspec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEntities: [world]\n",
		"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspecs:\n- endpointSelector: {matchExpressions: [{key: k8s:app, operator: NotIn, values: [x]}]}\n  ingress:\n  - icmps: [{fields: [{type: EchoRequest}, {type: 128, family: IPv6}]}]\n",
		"kind: List\nitems:\n- kind: CiliumNetworkPolicy\n  apiVersion: cilium.io/v2\n  metadata: {name: d}\n  spec: {endpointSelector: {}, egress: [{toFQDNs: [{matchName: x}]}]}\n---\nendpointSelector: {}\n",
		`{"endpointSelector": {}, "labels": ["a=b", {"key": "c", "source": "k8s"}], "egress": [{"toPorts": [{"ports": [{"port": "https"}, {"port": "0", "protocol": "udp"}]}]}]}`,
		`{"endpointSelector": {}, "ingress": [{"fromCIDR": ["192.168.1.1", "fd00::1/64"]}]}`,
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := api.Parse(data)
		if err != nil {
			if rules != nil {
				t.Fatalf("rules returned with error %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(rules) == 0 {
			t.Fatal("no rules and no error")
		}
		list := make([]api.Rule, len(rules))
		for i := range rules {
			if err := rules[i].Rule.Validate(); err != nil {
				t.Fatalf("accepted rule %d does not validate: %v", i, err)
			}
			for _, pr := range portRules(&rules[i].Rule) {
				for _, pp := range pr.Ports {
					if _, _, _, err := pp.Range(); err != nil {
						t.Fatalf("accepted port %+v: Range: %v", pp, err)
					}
				}
			}
			list[i] = rules[i].Rule
		}
		first, err := json.Marshal(list)
		if err != nil {
			t.Fatal(err)
		}
		again, err := api.Parse(first)
		if err != nil {
			t.Fatalf("accepted rules do not parse again: %v\n%s", err, first)
		}
		list2 := make([]api.Rule, len(again))
		for i := range again {
			list2[i] = again[i].Rule
		}
		second, _ := json.Marshal(list2)
		if !bytes.Equal(first, second) {
			t.Fatalf("not a fixed point:\n%s\n%s", first, second)
		}
	})
}

func portRules(r *api.Rule) []api.PortRule {
	var out []api.PortRule
	for _, s := range r.Ingress {
		out = append(out, s.ToPorts...)
	}
	for _, s := range r.IngressDeny {
		out = append(out, s.ToPorts...)
	}
	for _, s := range r.Egress {
		out = append(out, s.ToPorts...)
	}
	for _, s := range r.EgressDeny {
		out = append(out, s.ToPorts...)
	}
	return out
}

// FuzzNetworkPolicy: the NetworkPolicy translation never panics, and what
// it accepts is one valid rule of the policy's namespace, owned by the
// object, that parses again as a plain rule to the same rule. The input is
// the object's spec (JSON or YAML flow style).
//
//	go test ./policy/api -run '^$' -fuzz FuzzNetworkPolicy -fuzztime 60s
func FuzzNetworkPolicy(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}`,
		`{"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}`,
		`{"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}, "podSelector": {}}]}]}`,
		`{"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": 80, "endPort": 90, "protocol": "UDP"}]}]}`,
		`{"podSelector": {}, "ingress": [{"ports": [{"port": "http"}, {"protocol": "SCTP"}]}], "egress": [{}]}`,
		`{"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}], "policyTypes": ["Egress"]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		doc := append([]byte(`{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "x"}, "spec": `), spec...)
		doc = append(doc, '}')
		rules, err := api.Parse(doc)
		if err != nil {
			if rules != nil || err.Error() == "" {
				t.Fatalf("rules %v with error %q", rules, err)
			}
			return
		}
		if len(rules) != 1 {
			t.Fatalf("%d rules, want 1", len(rules))
		}
		pr := rules[0]
		if pr.Namespace != "x" || pr.Object == nil || pr.Object.Kind != api.KindNP || !pr.Object.Owns(pr.Labels) {
			t.Fatalf("rule of namespace %q, object %v, labels %v", pr.Namespace, pr.Object, pr.Labels)
		}
		if err := pr.Rule.Validate(); err != nil {
			t.Fatalf("accepted rule does not validate: %v", err)
		}
		if len(pr.Rule.Ingress)+len(pr.Rule.Egress) == 0 {
			t.Fatal("a NetworkPolicy isolates at least one direction")
		}
		first, _ := json.Marshal(pr.Rule)
		again, err := api.Parse(first)
		if err != nil {
			t.Fatalf("the rule does not parse again: %v\n%s", err, first)
		}
		second, _ := json.Marshal(again[0].Rule)
		if !bytes.Equal(first, second) {
			t.Fatalf("not a fixed point:\n%s\n%s", first, second)
		}
	})
}
