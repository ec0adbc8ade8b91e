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
