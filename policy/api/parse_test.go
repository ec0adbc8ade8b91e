package api_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/policy/api"
)

func mustParse(t *testing.T, doc string) []api.ParsedRule {
	t.Helper()
	rules, err := api.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\ndocument:\n%s", err, doc)
	}
	return rules
}

func cnpLabels(ns, name string) []string {
	return []string{
		"k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
		"k8s:io.cilium.k8s.policy.name=" + name,
		"k8s:io.cilium.k8s.policy.namespace=" + ns,
	}
}

// Each form a Cilium user may hand over is accepted, with the namespace
// and labels Cilium would give its rules.
func TestParseAcceptedForms(t *testing.T) {
	type want struct {
		namespace string
		labels    []string
		object    string // ObjectRef.String(), "" for a plain rule
	}
	plain := want{}
	cases := []struct {
		name string
		doc  string
		want []want
	}{
		{
			name: "single rule, JSON",
			doc: `{"endpointSelector": {"matchLabels": {"app": "web"}},
			       "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
			                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}`,
			want: []want{plain},
		},
		{
			name: "list of rules, JSON (cilium policy import)",
			doc: `[{"endpointSelector": {}, "ingress": [{}]},
			       {"endpointSelector": {"matchLabels": {"app": "db"}}, "egress": [{"toEntities": ["world"]}],
			        "labels": [{"key": "team", "value": "a", "source": "unspec"}]}]`,
			want: []want{plain, {labels: []string{"unspec:team=a"}}},
		},
		{
			name: "list of rules, YAML",
			doc: `
- endpointSelector:
    matchLabels: {app: web}
  ingress:
  - fromEntities: [host]
- endpointSelector:
    matchExpressions:
    - {key: tier, operator: In, values: [db, cache]}
  egressDeny:
  - toCIDR: [10.0.0.0/8]
  labels: ["policy=deny-internal"]
`,
			want: []want{plain, {labels: []string{"unspec:policy=deny-internal"}}},
		},
		{
			name: "CiliumNetworkPolicy with spec",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-frontend
  namespace: prod
spec:
  endpointSelector:
    matchLabels: {app: web}
  ingress:
  - fromEndpoints:
    - matchLabels: {role: frontend}
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
`,
			want: []want{{namespace: "prod", labels: cnpLabels("prod", "allow-frontend"), object: `CiliumNetworkPolicy "prod/allow-frontend"`}},
		},
		{
			name: "CiliumNetworkPolicy with specs, default namespace",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: two}
specs:
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]
- endpointSelector: {matchLabels: {app: b}}
  egress: [{toEndpoints: [{matchLabels: {app: a}}]}]
  labels: [{key: part, value: egress}]
`,
			want: []want{
				{namespace: "default", labels: cnpLabels("default", "two"), object: `CiliumNetworkPolicy "default/two"`},
				{namespace: "default", labels: append(cnpLabels("default", "two"), "unspec:part=egress"), object: `CiliumNetworkPolicy "default/two"`},
			},
		},
		{
			name: "CiliumNetworkPolicy with spec and specs",
			doc: `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
			       "metadata": {"name": "both", "namespace": "ns1", "uid": "1234-abcd", "resourceVersion": "7",
			                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
			       "spec": {"endpointSelector": {}, "ingress": [{}]},
			       "specs": [{"endpointSelector": {}, "egress": [{}]}],
			       "status": {"derivativePolicies": {}}}`,
			want: []want{
				{namespace: "ns1", labels: append(cnpLabels("ns1", "both"), "k8s:io.cilium.k8s.policy.uid=1234-abcd"), object: `CiliumNetworkPolicy "ns1/both"`},
				{namespace: "ns1", labels: append(cnpLabels("ns1", "both"), "k8s:io.cilium.k8s.policy.uid=1234-abcd"), object: `CiliumNetworkPolicy "ns1/both"`},
			},
		},
		{
			name: "CiliumClusterwideNetworkPolicy",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: icmp}
spec:
  endpointSelector: {}
  ingress:
  - icmps:
    - fields:
      - {type: EchoRequest, family: IPv4}
      - {type: 128, family: IPv6}
`,
			want: []want{{labels: []string{
				"k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy",
				"k8s:io.cilium.k8s.policy.name=icmp",
			}, object: `CiliumClusterwideNetworkPolicy "icmp"`}},
		},
		{
			name: "List of CiliumNetworkPolicies (kubectl get -o yaml)",
			doc: `
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: a, namespace: x}
  spec: {endpointSelector: {}, ingress: [{}]}
- apiVersion: cilium.io/v2
  kind: CiliumClusterwideNetworkPolicy
  metadata: {name: b}
  spec: {endpointSelector: {}, egress: [{toEntities: [cluster]}]}
`,
			want: []want{
				{namespace: "x", labels: cnpLabels("x", "a"), object: `CiliumNetworkPolicy "x/a"`},
				{labels: []string{"k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy", "k8s:io.cilium.k8s.policy.name=b"},
					object: `CiliumClusterwideNetworkPolicy "b"`},
			},
		},
		{
			name: "typed list whose items omit kind",
			doc: `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicyList",
			       "items": [{"metadata": {"name": "a", "namespace": "x"}, "spec": {"endpointSelector": {}, "ingress": [{}]}}]}`,
			want: []want{{namespace: "x", labels: cnpLabels("x", "a"), object: `CiliumNetworkPolicy "x/a"`}},
		},
		{
			name: "multi-document YAML stream",
			doc: `# policies for the shop
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec: {endpointSelector: {matchLabels: {app: a}}, ingress: [{}]}
---
# a plain rule may sit in the stream too
endpointSelector: {matchLabels: {app: b}}
egress: [{toEntities: [world]}]
--- # trailing comment
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: other}
spec: {endpointSelector: {}, ingress: [{}]}
---
`,
			want: []want{
				{namespace: "shop", labels: cnpLabels("shop", "a"), object: `CiliumNetworkPolicy "shop/a"`},
				plain,
				{namespace: "other", labels: cnpLabels("other", "a"), object: `CiliumNetworkPolicy "other/a"`},
			},
		},
		{
			name: "JSON list mixing rules and objects",
			doc: `[{"endpointSelector": {}, "ingress": [{}]},
			       {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "m"},
			        "spec": {"endpointSelector": {}, "ingress": [{}]}}]`,
			want: []want{plain, {namespace: "default", labels: cnpLabels("default", "m"), object: `CiliumNetworkPolicy "default/m"`}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules := mustParse(t, c.doc)
			if len(rules) != len(c.want) {
				t.Fatalf("got %d rules, want %d", len(rules), len(c.want))
			}
			for i, w := range c.want {
				r := rules[i]
				if r.Namespace != w.namespace {
					t.Errorf("rule %d: namespace %q, want %q", i, r.Namespace, w.namespace)
				}
				wl := slices.Sorted(slices.Values(w.labels))
				if !slices.Equal(r.Labels, wl) {
					t.Errorf("rule %d: labels\n got  %q\n want %q", i, r.Labels, wl)
				}
				obj := ""
				if r.Object != nil {
					obj = r.Object.String()
				}
				if obj != w.object {
					t.Errorf("rule %d: object %q, want %q", i, obj, w.object)
				}
				if len(r.Rule.Labels) != len(r.Labels) {
					t.Errorf("rule %d: Rule.Labels %v do not match Labels %v", i, r.Rule.Labels, r.Labels)
				}
				if err := r.Rule.Validate(); err != nil {
					t.Errorf("rule %d: accepted rule does not validate: %v", i, err)
				}
			}
		})
	}
}

// Parse returns rules in canonical form: what the engine and GET see.
func TestParseCanonicalForm(t *testing.T) {
	rules := mustParse(t, `
endpointSelector: {}
ingress:
- fromCIDR: [10.1.2.3/8, 192.168.1.7]
  toPorts:
  - ports:
    - {port: 8080, endPort: 8090, protocol: tcp}
    - {port: HTTPS}
    - {port: "0", protocol: udp}
- fromCIDRSet:
  - {cidr: "fd00::1/64", except: ["fd00::8/125"]}
  icmps:
  - fields:
    - {type: echoreply}
    - {type: "8"}
    - {type: neighborsolicitation, family: ipv6}
labels: ["b=2", "k8s:a=1", "b=2"]
`)
	got, err := json.Marshal(rules[0].Rule)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"endpointSelector":{},"ingress":[` +
		`{"fromCIDR":["10.0.0.0/8","192.168.1.7/32"],"toPorts":[{"ports":[` +
		`{"port":"8080","endPort":8090,"protocol":"TCP"},{"port":"https","protocol":"ANY"},{"port":"0","protocol":"UDP"}]}]},` +
		`{"fromCIDRSet":[{"cidr":"fd00::/64","except":["fd00::8/125"]}],"icmps":[{"fields":[` +
		`{"family":"IPv4","type":"EchoReply"},{"family":"IPv4","type":8},{"family":"IPv6","type":"NeighborSolicitation"}]}]}],` +
		`"labels":[{"key":"a","value":"1","source":"k8s"},{"key":"b","value":"2","source":"unspec"}]}`
	if string(got) != want {
		t.Errorf("canonical rule\n got  %s\n want %s", got, want)
	}
	if !slices.Equal(rules[0].Labels, []string{"k8s:a=1", "unspec:b=2"}) {
		t.Errorf("labels %q", rules[0].Labels)
	}
}

// Every rejection names where the problem is: the rule (or object) and
// the field path inside it.
func TestParseRejections(t *testing.T) {
	rule := func(body string) string { return `{"endpointSelector": {}, ` + body + `}` }
	cases := []struct {
		name        string
		doc         string
		want        string // substring of the error
		unsupported bool   // errors.Is(err, api.ErrUnsupported)
	}{
		// Strict decoding.
		{"unknown field", rule(`"ingress": [{"fromEndpoint": [{}]}]`),
			`rule 1: ingress[0].fromEndpoint: unknown field (did you mean "fromEndpoints"?)`, false},
		{"unknown field, other case", `{"EndpointSelector": {}}`,
			`rule 1: EndpointSelector: unknown field (did you mean "endpointSelector"?)`, false},
		{"unknown field in second rule of a list", `[` + rule(`"ingress": [{}]`) + `, ` + rule(`"egres": [{}]`) + `]`,
			`rule 2: egres: unknown field`, false},
		{"unknown field in a CNP spec", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "p", "namespace": "n"},
			"specs": [{"endpointSelector": {}}, {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"prot": "80"}]}]}]}]}`,
			`CiliumNetworkPolicy "n/p": specs[1].ingress[0].toPorts[0].ports[0].prot: unknown field`, false},
		{"unknown top-level object field", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "p"}, "sepc": {}}`,
			`sepc: unknown field (did you mean "spec"?)`, false},
		{"duplicate key, JSON", `{"endpointSelector": {}, "ingress": [], "ingress": [{}]}`, `duplicate field "ingress"`, false},
		{"duplicate key, YAML", "endpointSelector: {}\ningress: []\ningress: [{}]\n", `"ingress" already set`, false},
		{"wrong type", rule(`"ingress": {"fromEntities": ["world"]}`), `rule 1: ingress: must be a list, not an object`, false},
		{"label value not a string", `{"endpointSelector": {"matchLabels": {"enabled": true}}}`,
			`endpointSelector.matchLabels.enabled: must be a string, not the boolean true (quote it in YAML)`, false},
		{"invalid JSON", `{"endpointSelector": {}`, `unexpected end of the JSON document`, false},
		{"invalid YAML", "endpointSelector: {\n  x: [\n", `invalid YAML`, false},

		// Documents and objects.
		{"empty document", "# nothing\n---\n", `the document holds no rules`, false},
		{"not a rule", `"hello"`, `a policy document is a rule, a list of rules or a policy object (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy), not the string "hello"`, false},
		{"CNP without name", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {}, "spec": {"endpointSelector": {}}}`,
			`CiliumNetworkPolicy: metadata.name: required`, false},
		{"CNP without rules", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x"}}`,
			`CiliumNetworkPolicy "default/x": spec: a CiliumNetworkPolicy needs spec (a rule) or specs`, false},
		{"CNP with a bad namespace", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x", "namespace": "Prod_1"}, "spec": {"endpointSelector": {}}}`,
			`metadata.namespace: "Prod_1" is not a valid namespace`, false},
		{"CCNP with a namespace", `{"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "x", "namespace": "a"}, "spec": {"endpointSelector": {}}}`,
			`metadata.namespace: a CiliumClusterwideNetworkPolicy is cluster-wide and has no namespace`, false},
		{"wrong apiVersion", `{"apiVersion": "cilium.io/v1", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x"}, "spec": {"endpointSelector": {}}}`,
			`apiVersion: the string "cilium.io/v1" is not supported for CiliumNetworkPolicy (want cilium.io/v2)`, false},
		{"NetworkPolicy with a named port", `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "x"},
			"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}}`,
			`NetworkPolicy "default/x": spec.ingress[0].ports[0].port: named port "http" is not supported`, true},
		{"other kind", `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}`, `kind: "Pod" is not a policy`, false},
		{"same CNP twice", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}}\n---\n" +
			"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: default}\nspec: {endpointSelector: {}}\n",
			`document 2: CiliumNetworkPolicy "default/x": appears more than once in the document`, false},
		{"rule label contradicting the derived ones", `{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x"},
			"spec": {"endpointSelector": {}, "labels": ["k8s:io.cilium.k8s.policy.name=y"]}}`,
			`spec.labels[0]: label io.cilium.k8s.policy.name is derived from the CiliumNetworkPolicy's metadata`, false},
		{"null rule", `[null]`, `rule 1: a rule cannot be null`, false},

		// Selectors.
		{"no selector", `{"ingress": [{}]}`, `rule 1: endpointSelector: required`, false},
		{"both selectors", `{"endpointSelector": {}, "nodeSelector": {}}`, `nodeSelector: a rule has either endpointSelector or nodeSelector, not both`, false},
		{"nodeSelector", `{"nodeSelector": {"matchLabels": {"role": "worker"}}, "ingress": [{}]}`,
			`rule 1: nodeSelector: nodeSelector (host policy) is not supported`, true},
		{"bad operator", `{"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}}`,
			`endpointSelector.matchExpressions[0].operator: unknown operator "Equals" (want In, NotIn, Exists or DoesNotExist)`, false},
		{"operator in wrong case", `{"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "in", "values": ["a"]}]}}`,
			`unknown operator "in"`, false},
		{"In without values", `{"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}`,
			`endpointSelector.matchExpressions[0].values: operator In needs at least one value`, false},
		{"Exists with values", rule(`"ingress": [{"fromEndpoints": [{"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}]}]`),
			`ingress[0].fromEndpoints[0].matchExpressions[0].values: operator Exists takes no values`, false},
		{"bad selector key", `{"endpointSelector": {"matchLabels": {"k8s:bad key": "x"}}}`, `endpointSelector.matchLabels["k8s:bad key"]: key "k8s:bad key"`, false},
		{"bad selector value", `{"endpointSelector": {"matchLabels": {"app": "no spaces"}}}`, `endpointSelector.matchLabels["app"]: label "any:app=no spaces": invalid value`, false},

		// Peers.
		{"unknown entity", rule(`"egress": [{"toEntities": ["world", "internet"]}]`),
			`egress[0].toEntities[1]: unknown entity "internet" (known: all, world`, false},
		{"bad CIDR", rule(`"ingress": [{"fromCIDR": ["10.0.0.0/33"]}]`), `ingress[0].fromCIDR[0]: "10.0.0.0/33" is not a CIDR`, false},
		{"bad CIDRSet cidr", rule(`"egress": [{"toCIDRSet": [{"cidr": "10.0.0/8"}]}]`), `egress[0].toCIDRSet[0].cidr: "10.0.0/8" is not a CIDR`, false},
		{"CIDRSet without cidr", rule(`"egress": [{"toCIDRSet": [{"except": ["10.0.0.0/8"]}]}]`), `egress[0].toCIDRSet[0].cidr: required`, false},
		{"except outside cidr", rule(`"egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}]}]`),
			`egress[0].toCIDRSet[0].except[0]: 10.1.0.0/24 is not inside cidr 10.0.0.0/16`, false},
		{"except wider than cidr", rule(`"egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}]}]`),
			`except[0]: 10.0.0.0/8 is not inside cidr 10.0.0.0/16`, false},
		{"except of another family", rule(`"ingress": [{"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}]}]`),
			`fromCIDRSet[0].except[0]: fd00::/64 and cidr 10.0.0.0/8 are of different address families`, false},

		// Ports.
		{"port out of range", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "65536"}]}]}]`),
			`ingress[0].toPorts[0].ports[0].port: port 65536 is out of range`, false},
		{"unknown port name", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "my-grpc"}]}]}]`),
			`ports[0].port: port name "my-grpc" is not in Membrane's service table`, false},
		{"port not a name", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "80/tcp"}]}]}]`),
			`port "80/tcp" is neither a number`, false},
		{"missing port", rule(`"ingress": [{"toPorts": [{"ports": [{"protocol": "TCP"}]}]}]`),
			`ports[0].port: port is required`, false},
		{"toPorts without ports", rule(`"ingress": [{"toPorts": [{}]}]`), `toPorts[0].ports: at least one port is required`, false},
		{"endPort below port", rule(`"egress": [{"toPorts": [{"ports": [{"port": "9000", "endPort": 8000}]}]}]`),
			`egress[0].toPorts[0].ports[0].endPort: endPort 8000 is below port 9000`, false},
		{"endPort with a named port", rule(`"egress": [{"toPorts": [{"ports": [{"port": "http", "endPort": 90}]}]}]`),
			`ports[0].endPort: endPort needs a numeric port, not the name "http"`, false},
		{"endPort out of range", rule(`"egress": [{"toPorts": [{"ports": [{"port": "80", "endPort": 70000}]}]}]`),
			`endPort 70000 is out of range`, false},
		{"endPort not an integer", rule(`"egress": [{"toPorts": [{"ports": [{"port": "80", "endPort": 90.5}]}]}]`),
			`ports[0].endPort: must be an integer, not 90.5`, false},
		{"unknown protocol", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "HTTP"}]}]}]`),
			`ports[0].protocol: unknown protocol "HTTP" (want TCP, UDP, SCTP, ICMP, ICMPV6 or ANY)`, false},
		{"VRRP", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "0", "protocol": "vrrp"}]}]}]`),
			`ports[0].protocol: protocol VRRP is not supported`, true},
		{"ICMP port out of type range", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "300", "protocol": "ICMP"}]}]}]`),
			`is an ICMP type and must be 0-255`, false},

		// ICMP.
		{"icmps and toPorts", rule(`"ingress": [{"toPorts": [{"ports": [{"port": "80"}]}], "icmps": [{"fields": [{"type": 8}]}]}]`),
			`ingress[0].icmps: icmps and toPorts cannot be combined in one rule section`, false},
		{"unknown ICMP type name", rule(`"ingress": [{"icmps": [{"fields": [{"type": "Ping"}]}]}]`),
			`ingress[0].icmps[0].fields[0].type: unknown IPv4 ICMP type "Ping"`, false},
		{"IPv6 name in IPv4", rule(`"ingress": [{"icmps": [{"fields": [{"type": "NeighborSolicitation"}]}]}]`),
			`unknown IPv4 ICMP type "NeighborSolicitation"`, false},
		{"ICMP type out of range", rule(`"ingress": [{"icmps": [{"fields": [{"type": 256}]}]}]`), `fields[0].type: type 256 is out of range (0-255)`, false},
		{"ICMP type missing", rule(`"ingress": [{"icmps": [{"fields": [{"family": "IPv4"}]}]}]`), `fields[0].type: type is required`, false},
		{"ICMP family", rule(`"ingress": [{"icmps": [{"fields": [{"type": 8, "family": "IPv5"}]}]}]`),
			`fields[0].family: unknown family "IPv5" (want IPv4 or IPv6)`, false},
		{"icmps without fields", rule(`"ingress": [{"icmps": [{}]}]`), `icmps[0].fields: at least one ICMP type is required`, false},

		// Rule labels.
		{"bad rule label", rule(`"labels": [{"key": "bad key", "value": "x"}]`), `rule 1: labels[0]: label "unspec:bad key": invalid key "bad key"`, false},
		{"bad rule label string", rule(`"labels": [":x=y"]`), `labels[0]: label ":x=y": empty source`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules, err := api.Parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted (%d rules), want an error containing %q", len(rules), c.want)
			}
			if rules != nil {
				t.Errorf("rules returned with the error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %s\nwant it to contain\n  %s", err, c.want)
			}
			var perr *api.Error
			if !errors.As(err, &perr) {
				t.Errorf("error is a %T, want *api.Error", err)
			}
			if got := errors.Is(err, api.ErrUnsupported); got != c.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", got, c.unsupported)
			}
		})
	}
}

// Every field of Cilium's format that Membrane does not enforce is refused
// with a 400-worthy error that names it and says it is unsupported.
func TestParseUnsupportedFields(t *testing.T) {
	cases := []struct{ body, field string }{
		{`"log": {"value": "x"}`, "log"},
		{`"ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}}]}]`, "ingress[0].toPorts[0].rules"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [{"matchPattern": "*"}]}}]}]`, "egress[0].toPorts[0].rules"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "9092"}], "rules": {"kafka": [{"topic": "t"}]}}]}]`, "egress[0].toPorts[0].rules"},
		{`"ingressDeny": [{"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{}]}}]}]`, "ingressDeny[0].toPorts[0].rules"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "443"}], "terminatingTLS": {"secret": {"name": "s"}}}]}]`, "egress[0].toPorts[0].terminatingTLS"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "443"}], "originatingTLS": {"secret": {"name": "s"}}}]}]`, "egress[0].toPorts[0].originatingTLS"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "443"}], "serverNames": ["a.example"]}]}]`, "egress[0].toPorts[0].serverNames"},
		{`"egress": [{"toPorts": [{"ports": [{"port": "443"}], "listener": {"name": "l"}}]}]`, "egress[0].toPorts[0].listener"},
		{`"ingress": [{"fromRequires": [{}]}]`, "ingress[0].fromRequires"},
		{`"ingress": [{"fromGroups": [{"aws": {}}]}]`, "ingress[0].fromGroups"},
		{`"ingress": [{"fromNodes": [{}]}]`, "ingress[0].fromNodes"},
		{`"ingress": [{"authentication": {"mode": "required"}}]`, "ingress[0].authentication"},
		{`"ingress": [{"auth": {"type": "spire"}}]`, "ingress[0].auth"},
		{`"ingressDeny": [{"fromRequires": [{}]}]`, "ingressDeny[0].fromRequires"},
		{`"ingressDeny": [{"fromGroups": [{}]}]`, "ingressDeny[0].fromGroups"},
		{`"ingressDeny": [{"fromNodes": [{}]}]`, "ingressDeny[0].fromNodes"},
		{`"egress": [{"toRequires": [{}]}]`, "egress[0].toRequires"},
		{`"egress": [{"toServices": [{"k8sService": {"serviceName": "s"}}]}]`, "egress[0].toServices"},
		{`"egress": [{"toFQDNs": [{"matchName": "example.com"}]}]`, "egress[0].toFQDNs"},
		{`"egress": [{"toGroups": [{}]}]`, "egress[0].toGroups"},
		{`"egress": [{"toNodes": [{}]}]`, "egress[0].toNodes"},
		{`"egress": [{"authentication": {"mode": "required"}}]`, "egress[0].authentication"},
		{`"egress": [{"auth": {"type": "null"}}]`, "egress[0].auth"},
		{`"egressDeny": [{"toRequires": [{}]}]`, "egressDeny[0].toRequires"},
		{`"egressDeny": [{"toServices": [{}]}]`, "egressDeny[0].toServices"},
		{`"egressDeny": [{"toGroups": [{}]}]`, "egressDeny[0].toGroups"},
		{`"egressDeny": [{"toNodes": [{}]}]`, "egressDeny[0].toNodes"},
		{`"egress": [{"toCIDRSet": [{"cidrGroupRef": "g"}]}]`, "egress[0].toCIDRSet[0].cidrGroupRef"},
		{`"ingress": [{"fromCIDRSet": [{"cidr": "10.0.0.0/8", "cidrGroupSelector": {}}]}]`, "ingress[0].fromCIDRSet[0].cidrGroupSelector"},
	}
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			_, err := api.Parse([]byte(`[{"endpointSelector": {}}, {"endpointSelector": {}, ` + c.body + `}]`))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, api.ErrUnsupported) {
				t.Errorf("%v: does not wrap ErrUnsupported", err)
			}
			prefix := "rule 2: " + c.field + ": "
			if !strings.Contains(err.Error(), prefix) || !strings.Contains(err.Error(), "not supported") {
				t.Errorf("error\n  %s\nwant %q ... not supported", err, prefix)
			}
		})
	}
	// null is unset, as in Kubernetes.
	mustParse(t, `{"endpointSelector": {}, "log": null, "egress": [{"toFQDNs": null}]}`)

	// The message the docs show.
	_, err := api.Parse([]byte(`[{"endpointSelector": {}}, {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{}]}}]}]}]`))
	if want := "rule 2: ingress[0].toPorts[0].rules: L7 rules (http/dns/kafka) are not supported; Membrane enforces L3/L4 only"; err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// Mutual authentication is refused with the same explanation in both of
// Cilium's spellings: auth (before 1.15) and authentication.
func TestParseAuthenticationSpellings(t *testing.T) {
	for field, body := range map[string]string{
		"authentication": "authentication:\n      mode: required",
		"auth":           "auth:\n      type: spire",
	} {
		t.Run(field, func(t *testing.T) {
			_, err := api.Parse([]byte(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: ssh-with-auth
spec:
  endpointSelector:
    matchLabels:
      role: bastion
  egress:
  - toEndpoints:
    - matchLabels:
        role: sshd
    ` + body + `
`))
			want := `CiliumNetworkPolicy "default/ssh-with-auth": spec.egress[0].` + field + `: ` + field + ` (mutual authentication`
			if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), ") is not supported") || !errors.Is(err, api.ErrUnsupported) {
				t.Errorf("got  %v\nwant %s...) is not supported", err, want)
			}
		})
	}
}

// All problems of a document come back at once, each on its own line.
func TestParseReportsEveryProblem(t *testing.T) {
	_, err := api.Parse([]byte(`
endpointSelector: {}
ingress:
- fromEntities: [moon]
  toPorts: [{ports: [{port: "99999"}]}]
egress:
- toCIDR: [not-a-cidr]
  toFQDNs: [{matchName: x}]
  tooPorts: []
`))
	if err == nil {
		t.Fatal("accepted")
	}
	var perr *api.Error
	if !errors.As(err, &perr) {
		t.Fatalf("%T", err)
	}
	var fields []string
	for _, p := range perr.Problems {
		fields = append(fields, p.Field)
	}
	slices.Sort(fields)
	want := []string{"egress[0].toCIDR[0]", "egress[0].toFQDNs", "egress[0].tooPorts", "ingress[0].fromEntities[0]", "ingress[0].toPorts[0].ports[0].port"}
	if !slices.Equal(fields, want) {
		t.Errorf("problem fields %q, want %q", fields, want)
	}
	if n := strings.Count(err.Error(), "\n"); n != len(want)-1 {
		t.Errorf("want one line per problem:\n%s", err)
	}
}

func TestObjectRefOwns(t *testing.T) {
	rules := mustParse(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
spec: {endpointSelector: {}, ingress: [{}]}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec: {endpointSelector: {}, ingress: [{}]}
`)
	cnp, ccnp := *rules[0].Object, *rules[1].Object
	for _, c := range []struct {
		obj    api.ObjectRef
		labels []string
		want   bool
	}{
		{cnp, rules[0].Labels, true},
		{cnp, rules[1].Labels, false},
		{ccnp, rules[1].Labels, true},
		{ccnp, rules[0].Labels, false},
		{api.ObjectRef{Kind: api.KindCNP, Namespace: "dev", Name: "web"}, rules[0].Labels, false},
		{cnp, nil, false},
	} {
		if got := c.obj.Owns(c.labels); got != c.want {
			t.Errorf("%s owns %v: %v, want %v", c.obj, c.labels, got, c.want)
		}
	}
}
