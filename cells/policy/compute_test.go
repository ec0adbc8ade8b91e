package policy

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// The identities of the computation tests: web (256) and db (257) in
// namespace prod, web (258) in namespace dev.
func computeIdentities() []*tables.Identity {
	return append(reserved(),
		ident(256, "app=web", "io.kubernetes.pod.namespace=prod"),
		ident(257, "app=db", "io.kubernetes.pod.namespace=prod"),
		ident(258, "app=web", "io.kubernetes.pod.namespace=dev"),
	)
}

var webLabels = ls("app=web", "io.kubernetes.pod.namespace=prod")

// compute returns the policy of an endpoint with labels subject.
func compute(cfg Config, subject labels.Labels, cidrs map[netip.Prefix]tables.NumericIdentity, rules ...*tables.PolicyRule) *identityPolicy {
	return newSnapshot(cfg, rules, computeIdentities(), cidrs).policyOf(subject)
}

func expectEnforced(t *testing.T, p *identityPolicy, ingress, egress bool) {
	t.Helper()
	if p.ingressEnforced != ingress || p.egressEnforced != egress {
		t.Errorf("enforced: ingress %v egress %v, want ingress %v egress %v", p.ingressEnforced, p.egressEnforced, ingress, egress)
	}
}

func allowDBToWeb80() *tables.PolicyRule {
	return rule("1/0", 1, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		Ingress: []policyapi.IngressRule{{
			FromEndpoints: []policyapi.EndpointSelector{esel("app", "db")},
			ToPorts:       []policyapi.PortRule{tcp("80")},
		}},
	})
}

func TestComputeNoRules(t *testing.T) {
	p := compute(DefaultConfig, webLabels, nil)
	expectEnforced(t, p, false, false)
	expectEntries(t, p.entries)
}

func TestComputeIngressAllow(t *testing.T) {
	p := compute(DefaultConfig, webLabels, nil, allowDBToWeb80())
	expectEnforced(t, p, true, false)
	expectEntries(t, p.entries, "in 1 any", "in 257 tcp 80")
	if p.entries[1].RuleKeys[0] != "1/0" || p.entries[0].RuleKeys[0] != RuleAllowLocalhost {
		t.Errorf("rule keys: %+v", p.entries)
	}

	// The rule does not select db: db is not enforced.
	p = compute(DefaultConfig, ls("app=db", "io.kubernetes.pod.namespace=prod"), nil, allowDBToWeb80())
	expectEnforced(t, p, false, false)
	expectEntries(t, p.entries)
}

func TestComputeDefaultDeny(t *testing.T) {
	t.Run("empty ingress entry: default deny, nothing allowed", func(t *testing.T) {
		p := compute(DefaultConfig, webLabels, nil, rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{}},
		}))
		expectEnforced(t, p, true, false)
		expectEntries(t, p.entries, "in 1 any")
	})
	t.Run("an ingressDeny section turns default deny on", func(t *testing.T) {
		p := compute(DefaultConfig, webLabels, nil, rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			EgressDeny:       []policyapi.EgressDenyRule{{ToEntities: []policyapi.Entity{policyapi.EntityHost}}},
		}))
		expectEnforced(t, p, false, true)
		expectEntries(t, p.entries, "eg 1 any deny")
	})
	t.Run("enableDefaultDeny false: allows change nothing", func(t *testing.T) {
		r := allowDBToWeb80()
		r.Rule.EnableDefaultDeny = &policyapi.DefaultDenyConfig{Ingress: boolp(false)}
		p := compute(DefaultConfig, webLabels, nil, r)
		expectEnforced(t, p, false, false)
		expectEntries(t, p.entries)
	})
	t.Run("enableDefaultDeny false with a deny: allow all but the deny", func(t *testing.T) {
		p := compute(DefaultConfig, webLabels, nil, rule("1/0", 1, policyapi.Rule{
			EndpointSelector:  sel("app", "web"),
			IngressDeny:       []policyapi.IngressDenyRule{{FromEndpoints: []policyapi.EndpointSelector{esel("app", "db")}}},
			EnableDefaultDeny: &policyapi.DefaultDenyConfig{Ingress: boolp(false)},
		}))
		expectEnforced(t, p, true, false)
		expectEntries(t, p.entries, "in 0 any", "in 257 any deny")
		if p.entries[0].RuleKeys[0] != RuleNoDefaultDeny {
			t.Errorf("allow-all entry from %v", p.entries[0].RuleKeys)
		}
	})
	t.Run("one rule with default deny is enough", func(t *testing.T) {
		off := allowDBToWeb80()
		off.Rule.EnableDefaultDeny = &policyapi.DefaultDenyConfig{Ingress: boolp(false)}
		on := rule("2/0", 2, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{FromEntities: []policyapi.Entity{policyapi.EntityHealth}}},
		})
		p := compute(DefaultConfig, webLabels, nil, off, on)
		expectEnforced(t, p, true, false)
		expectEntries(t, p.entries, "in 1 any", "in 4 any", "in 257 tcp 80")
	})
	t.Run("enableDefaultDeny false on egress leaves ingress", func(t *testing.T) {
		r := allowDBToWeb80()
		r.Rule.EnableDefaultDeny = &policyapi.DefaultDenyConfig{Egress: boolp(false)}
		expectEnforced(t, compute(DefaultConfig, webLabels, nil, r), true, false)
	})
}

func TestComputeEnablePolicyModes(t *testing.T) {
	always := Config{EnablePolicy: EnforcementAlways, AllowLocalhost: AllowLocalhostAlways}
	p := compute(always, webLabels, nil)
	expectEnforced(t, p, true, true)
	expectEntries(t, p.entries, "in 1 any")

	// Under always, allows count even in a direction where the rule
	// turns default deny off: every direction is default deny.
	r := rule("1/0", 1, policyapi.Rule{
		EndpointSelector:  sel("app", "web"),
		Egress:            []policyapi.EgressRule{{ToEntities: []policyapi.Entity{policyapi.EntityWorld}, ToPorts: []policyapi.PortRule{tcp("443")}}},
		EnableDefaultDeny: &policyapi.DefaultDenyConfig{Egress: boolp(false)},
	})
	p = compute(always, webLabels, nil, r)
	expectEnforced(t, p, true, true)
	expectEntries(t, p.entries, "in 1 any", "eg 2 tcp 443", "eg 9 tcp 443", "eg 10 tcp 443")

	never := Config{EnablePolicy: EnforcementNever, AllowLocalhost: AllowLocalhostAlways}
	deny := rule("2/0", 2, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		IngressDeny:      []policyapi.IngressDenyRule{{FromEntities: []policyapi.Entity{policyapi.EntityAll}}},
	})
	p = compute(never, webLabels, nil, allowDBToWeb80(), deny)
	expectEnforced(t, p, false, false)
	expectEntries(t, p.entries)
}

func TestComputeAllowLocalhost(t *testing.T) {
	policy := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	p := compute(policy, webLabels, nil, allowDBToWeb80())
	expectEntries(t, p.entries, "in 257 tcp 80")

	// always: a deny of the host still wins.
	deny := rule("2/0", 2, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		IngressDeny:      []policyapi.IngressDenyRule{{FromEntities: []policyapi.Entity{policyapi.EntityHost}}},
	})
	p = compute(DefaultConfig, webLabels, nil, allowDBToWeb80(), deny)
	expectEntries(t, p.entries, "in 1 any deny", "in 257 tcp 80")
}

func TestComputeDenyWins(t *testing.T) {
	fromDB := []policyapi.EndpointSelector{esel("app", "db")}
	cases := []struct {
		name  string
		allow []policyapi.PortRule
		deny  []policyapi.PortRule
		want  []string
	}{
		{"deny all ports covers the allow", []policyapi.PortRule{tcp("80")}, nil,
			[]string{"in 257 any deny"}},
		{"deny of the same port", []policyapi.PortRule{tcp("80")}, []policyapi.PortRule{tcp("80")},
			[]string{"in 257 tcp 80 deny"}},
		{"deny range covers the allow", []policyapi.PortRule{tcp("85")}, []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "80", EndPort: 90, Protocol: "TCP"}}}},
			[]string{"in 257 tcp 80-90 deny"}},
		{"deny inside the allow range: the allow is cut around it", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "80", EndPort: 90, Protocol: "TCP"}}}}, []policyapi.PortRule{tcp("85")},
			[]string{"in 257 tcp 80-84", "in 257 tcp 85 deny", "in 257 tcp 86-90"}},
		{"partial overlap", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "86", EndPort: 89, Protocol: "TCP"}}}}, []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "80", EndPort: 87, Protocol: "TCP"}}}},
			[]string{"in 257 tcp 80-87 deny", "in 257 tcp 88-89"}},
		{"deny of another protocol leaves the allow", []policyapi.PortRule{tcp("80")}, []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "80", Protocol: "UDP"}}}},
			[]string{"in 257 tcp 80", "in 257 udp 80 deny"}},
		{"deny of one protocol under an allow of all: both stay", nil, []policyapi.PortRule{tcp("80")},
			[]string{"in 257 any", "in 257 tcp 80 deny"}},
		{"deny of all TCP ports covers TCP allows", []policyapi.PortRule{tcp("80"), {Ports: []policyapi.PortProtocol{{Port: "53", Protocol: "UDP"}}}}, []policyapi.PortRule{tcp("0")},
			[]string{"in 257 tcp deny", "in 257 udp 53"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rule("1/0", 1, policyapi.Rule{
				EndpointSelector: sel("app", "web"),
				Ingress:          []policyapi.IngressRule{{FromEndpoints: fromDB, ToPorts: tc.allow}},
				IngressDeny:      []policyapi.IngressDenyRule{{FromEndpoints: fromDB, ToPorts: tc.deny}},
			})
			p := compute(Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}, webLabels, nil, r)
			expectEntries(t, p.entries, tc.want...)
		})
	}

	t.Run("wildcard deny and specific allow both stay", func(t *testing.T) {
		r := rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{FromEndpoints: fromDB, ToPorts: []policyapi.PortRule{tcp("80")}}},
			IngressDeny:      []policyapi.IngressDenyRule{{FromEntities: []policyapi.Entity{policyapi.EntityAll}, ToPorts: []policyapi.PortRule{tcp("80")}}},
		})
		p := compute(Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}, webLabels, nil, r)
		expectEntries(t, p.entries, "in 0 tcp 80 deny", "in 257 tcp 80")
	})
	t.Run("covered allows of the same identity merge", func(t *testing.T) {
		r1 := allowDBToWeb80()
		r2 := rule("2/0", 2, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{FromEndpoints: fromDB}},
		})
		p := compute(Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}, webLabels, nil, r1, r2)
		expectEntries(t, p.entries, "in 257 any")
	})
}

func TestComputeEntities(t *testing.T) {
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	fromEntities := func(es ...policyapi.Entity) *tables.PolicyRule {
		return rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{FromEntities: es}},
		})
	}
	t.Run("all is one wildcard entry", func(t *testing.T) {
		idents := computeIdentities()
		for i := range 1000 {
			idents = append(idents, ident(tables.NumericIdentity(1000+i), "app=x"+string(rune('a'+i%26)), "n="+itoa(i)))
		}
		p := newSnapshot(cfg, []*tables.PolicyRule{fromEntities(policyapi.EntityAll)}, idents, nil).policyOf(webLabels)
		expectEntries(t, p.entries, "in 0 any")
	})
	t.Run("cluster", func(t *testing.T) {
		p := compute(cfg, webLabels, nil, fromEntities(policyapi.EntityCluster))
		expectEntries(t, p.entries, "in 1 any", "in 3 any", "in 4 any", "in 5 any", "in 6 any",
			"in 256 any", "in 257 any", "in 258 any")
	})
	t.Run("host, remote-node, kube-apiserver", func(t *testing.T) {
		p := compute(cfg, webLabels, nil, fromEntities(policyapi.EntityHost, policyapi.EntityRemoteNode, policyapi.EntityKubeAPIServer))
		expectEntries(t, p.entries, "in 1 any", "in 6 any", "in 7 any")
	})
	t.Run("world includes CIDR identities", func(t *testing.T) {
		cidrs := map[netip.Prefix]tables.NumericIdentity{netip.MustParsePrefix("192.0.2.0/24"): tables.LocalIdentityFlag | 1}
		p := compute(cfg, webLabels, cidrs, fromEntities(policyapi.EntityWorld))
		expectEntries(t, p.entries, "in 2 any", "in 9 any", "in 10 any", "in 16777217 any")
	})
	t.Run("empty fromEndpoints selector: cluster identities, no reserved one", func(t *testing.T) {
		p := compute(cfg, webLabels, nil, rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{FromEndpoints: []policyapi.EndpointSelector{{}}}},
		}))
		expectEntries(t, p.entries, "in 256 any", "in 257 any", "in 258 any")
	})
	t.Run("ports without peers: any peer", func(t *testing.T) {
		p := compute(cfg, webLabels, nil, rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Ingress:          []policyapi.IngressRule{{ToPorts: []policyapi.PortRule{tcp("443")}}},
		}))
		expectEntries(t, p.entries, "in 0 tcp 443")
	})
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestComputePorts(t *testing.T) {
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	toDB := func(ports []policyapi.PortRule, icmps []policyapi.ICMPRule) *tables.PolicyRule {
		return rule("1/0", 1, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Egress:           []policyapi.EgressRule{{ToEndpoints: []policyapi.EndpointSelector{esel("app", "db")}, ToPorts: ports, ICMPs: icmps}},
		})
	}
	cases := []struct {
		name  string
		ports []policyapi.PortRule
		icmps []policyapi.ICMPRule
		want  []string
	}{
		{"endPort range", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "8000", EndPort: 8080, Protocol: "TCP"}}}}, nil,
			[]string{"eg 257 tcp 8000-8080"}},
		{"UDP and SCTP", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "53", Protocol: "UDP"}, {Port: "9", Protocol: "sctp"}}}}, nil,
			[]string{"eg 257 udp 53", "eg 257 sctp 9"}},
		{"ANY with a port: one entry per port protocol", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "80"}}}}, nil,
			[]string{"eg 257 tcp 80", "eg 257 udp 80", "eg 257 sctp 80"}},
		{"ANY port 0: everything", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "0", Protocol: "ANY"}}}}, nil,
			[]string{"eg 257 any"}},
		{"TCP port 0: every TCP port", []policyapi.PortRule{tcp("0")}, nil,
			[]string{"eg 257 tcp"}},
		{"service name", []policyapi.PortRule{{Ports: []policyapi.PortProtocol{{Port: "https", Protocol: "TCP"}}}}, nil,
			[]string{"eg 257 tcp 443"}},
		{"toPorts entry without ports: every port", []policyapi.PortRule{{}}, nil,
			[]string{"eg 257 any"}},
		{"ICMP types by number and name", nil, []policyapi.ICMPRule{{Fields: []policyapi.ICMPField{
			{Type: json.RawMessage(`8`)},
			{Family: "IPv6", Type: json.RawMessage(`"EchoRequest"`)},
		}}}, []string{"eg 257 icmp 8", "eg 257 icmpv6 128"}},
		{"ICMP type 0 cannot be told from every type", nil, []policyapi.ICMPRule{{Fields: []policyapi.ICMPField{{Type: json.RawMessage(`0`)}}}},
			[]string{"eg 257 icmp"}},
		{"ports and ICMP together", []policyapi.PortRule{tcp("5432")}, []policyapi.ICMPRule{{Fields: []policyapi.ICMPField{{Type: json.RawMessage(`"EchoRequest"`)}}}},
			[]string{"eg 257 icmp 8", "eg 257 tcp 5432"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := compute(cfg, webLabels, nil, toDB(tc.ports, tc.icmps))
			expectEnforced(t, p, false, true)
			expectEntries(t, p.entries, sortedEntries(tc.want)...)
		})
	}
}

// sortedEntries sorts expected entries the way the engine does.
func sortedEntries(ss []string) []string {
	es := make([]tables.PolicyEntry, len(ss))
	for i, s := range ss {
		es[i] = entry(s)
	}
	slices.SortFunc(es, compareEntries)
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = formatEntry(e)
	}
	return out
}

func TestComputeCIDR(t *testing.T) {
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	n := tables.LocalIdentityFlag
	p := netip.MustParsePrefix
	cidrs := map[netip.Prefix]tables.NumericIdentity{
		p("10.0.0.0/8"):  n | 1,
		p("10.1.0.0/16"): n | 2, // the exception
		p("10.2.0.0/16"): n | 3, // another rule's, inside 10.0.0.0/8
		p("10.1.5.0/24"): n | 4, // inside the exception
	}
	r := rule("1/0", 1, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		Egress: []policyapi.EgressRule{{
			ToCIDRSet: []policyapi.CIDRRule{{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
			ToPorts:   []policyapi.PortRule{tcp("443")},
		}},
	})
	pol := compute(cfg, webLabels, cidrs, r)
	expectEntries(t, pol.entries, "eg 16777217 tcp 443", "eg 16777219 tcp 443")

	r2 := rule("2/0", 2, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		EgressDeny:       []policyapi.EgressDenyRule{{ToCIDR: []string{"10.2.0.0/16"}}},
	})
	pol = compute(cfg, webLabels, cidrs, r, r2)
	expectEntries(t, pol.entries, "eg 16777217 tcp 443", "eg 16777219 any deny")
}

func TestComputeNamespacedRule(t *testing.T) {
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	r := rule("1/0", 1, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		Ingress: []policyapi.IngressRule{{
			FromEndpoints: []policyapi.EndpointSelector{{}},
		}},
	})
	r.Namespace = "prod"
	// prod's web: peers of {} are prod's endpoints only.
	pol := compute(cfg, webLabels, nil, r)
	expectEntries(t, pol.entries, "in 256 any", "in 257 any")
	// dev's web is not selected at all.
	pol = compute(cfg, ls("app=web", "io.kubernetes.pod.namespace=dev"), nil, r)
	expectEnforced(t, pol, false, false)

	// A peer selector naming the namespace reaches other namespaces.
	r.Rule.Ingress[0].FromEndpoints = []policyapi.EndpointSelector{esel("k8s:io.kubernetes.pod.namespace", "dev")}
	pol = compute(cfg, webLabels, nil, r)
	expectEntries(t, pol.entries, "in 258 any")
}

func TestComputeProblemsSelectNothing(t *testing.T) {
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	r := rule("1/0", 1, policyapi.Rule{
		EndpointSelector: sel("app", "web"),
		Ingress: []policyapi.IngressRule{{
			FromEndpoints: []policyapi.EndpointSelector{{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", "Bogus")}}},
			FromCIDR:      []string{"not-a-cidr"},
		}},
	})
	c := compileRule(r)
	if len(c.problems) != 2 {
		t.Errorf("problems: %v", c.problems)
	}
	pol := compute(cfg, webLabels, nil, r)
	expectEnforced(t, pol, true, false)
	expectEntries(t, pol.entries)
}
