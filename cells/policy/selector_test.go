package policy

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

func expr(key, op string, values ...string) policyapi.LabelSelectorRequirement {
	return policyapi.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func TestLabelSelectorMatches(t *testing.T) {
	web := labels.Labels{
		{Source: "container", Key: "tier", Value: "front"},
		{Source: "k8s", Key: "app", Value: "web"},
		{Source: "k8s", Key: labels.NamespaceKey, Value: "prod"},
	}
	cases := []struct {
		name string
		sel  policyapi.EndpointSelector
		want bool
	}{
		{"empty selects everything", policyapi.EndpointSelector{}, true},
		{"matchLabels without source matches any source", esel("app", "web"), true},
		{"matchLabels with the label's source", esel("k8s:app", "web"), true},
		{"matchLabels any: source", esel("any:tier", "front"), true},
		{"matchLabels another source", esel("container:app", "web"), false},
		{"matchLabels other value", esel("app", "db"), false},
		{"matchLabels missing key", esel("role", "x"), false},
		{"two matchLabels both hold", esel("app", "web", "container:tier", "front"), true},
		{"two matchLabels one fails", esel("app", "web", "tier", "back"), false},
		{"In holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opIn, "db", "web")}}, true},
		{"In fails", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opIn, "db", "cache")}}, false},
		{"In on a missing key", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("role", opIn, "x")}}, false},
		{"NotIn holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opNotIn, "db")}}, true},
		{"NotIn fails", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("k8s:app", opNotIn, "web", "db")}}, false},
		{"NotIn on a missing key holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("role", opNotIn, "x")}}, true},
		{"Exists holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("tier", opExists)}}, true},
		{"Exists with the wrong source", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("k8s:tier", opExists)}}, false},
		{"Exists fails", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("role", opExists)}}, false},
		{"DoesNotExist holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("role", opDoesNotExist)}}, true},
		{"DoesNotExist fails", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opDoesNotExist)}}, false},
		{"DoesNotExist of another source holds", policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("container:app", opDoesNotExist)}}, true},
		{"matchLabels and expressions together", policyapi.EndpointSelector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []policyapi.LabelSelectorRequirement{expr("tier", opNotIn, "back"), expr("role", opDoesNotExist)},
		}, true},
		{"namespace label by key", esel("k8s:io.kubernetes.pod.namespace", "prod"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newPeerSelector(tc.sel, ruleScope{}, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.matchesLabels(web); got != tc.want {
				t.Errorf("%s matches %s = %v, want %v", s, web, got, tc.want)
			}
		})
	}
}

func TestLabelSelectorInvalid(t *testing.T) {
	for _, es := range []policyapi.EndpointSelector{
		{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", "Equals", "x")}},
		{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opIn)}},
		{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opExists, "x")}},
		{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("k8s:", opExists)}},
	} {
		if s, err := newPeerSelector(es, ruleScope{}, false); err == nil {
			t.Errorf("%+v: want an error, got selector %s", es, s)
		}
	}
}

// The same selector written differently has one key, so the cache holds
// it once; different selectors have different keys.
func TestLabelSelectorKey(t *testing.T) {
	key := func(es policyapi.EndpointSelector, ns string) string {
		s, err := newPeerSelector(es, ruleScope{namespace: ns}, false)
		if err != nil {
			t.Fatal(err)
		}
		return s.key()
	}
	a := key(policyapi.EndpointSelector{MatchLabels: map[string]string{"app": "web", "k8s:tier": "x"}}, "")
	b := key(policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{
		expr("k8s:tier", opIn, "x"), expr("any:app", opIn, "web", "web"),
	}}, "")
	if a != b {
		t.Errorf("equivalent selectors have keys %q and %q", a, b)
	}
	if c := key(esel("app", "web"), "prod"); c == key(esel("app", "web"), "") {
		t.Errorf("namespace restriction missing from key %q", c)
	}
	if key(esel("app", "web"), "") == key(esel("k8s:app", "web"), "") {
		t.Error("a source-less key and a k8s: key must differ")
	}
}

// How a rule's origin scopes its selectors, case by case as Cilium
// translates CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy rules
// (its examples/policies/kubernetes are built from these cases): which of
// five endpoints each selector selects. Peers of deny sections are
// scoped by the same function as peers of allow sections.
func TestSelectorScope(t *testing.T) {
	eps := map[string]labels.Labels{
		// prod is labelled faction=alliance, dev faction=empire.
		"prod": ls("app=web", "io.kubernetes.pod.namespace=prod", "io.cilium.k8s.namespace.labels.faction=alliance"),
		"dev":  ls("app=web", "io.kubernetes.pod.namespace=dev", "io.cilium.k8s.namespace.labels.faction=empire"),
		// An endpoint without a namespace: a container started outside any pod.
		"bare": {{Source: "container", Key: "app", Value: "web"}},
		"host": {{Source: labels.SourceReserved, Key: "host"}},
		"init": {{Source: labels.SourceReserved, Key: "init"}},
	}
	cnp := ruleScope{namespace: "prod"}
	ccnp := ruleScope{clusterwide: true}
	plain := ruleScope{}
	nsExists := policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("io.kubernetes.pod.namespace", opExists)}}
	factionIn := policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{
		expr("k8s:io.cilium.k8s.namespace.labels.faction", opIn, "alliance", "empire")}}
	cases := []struct {
		name        string
		scope       ruleScope
		subject     bool // the rule's endpointSelector, not a peer
		subjectInit bool // the rule's endpointSelector names reserved:init
		sel         policyapi.EndpointSelector
		want        []string
	}{
		// A CiliumNetworkPolicy in prod.
		{name: "cnp peer: the rule's namespace", scope: cnp, sel: esel("app", "web"), want: []string{"prod"}},
		{name: "cnp peer {}: the rule's namespace", scope: cnp, sel: policyapi.EndpointSelector{}, want: []string{"prod"}},
		{name: "cnp peer naming the namespace", scope: cnp, sel: esel("k8s:io.kubernetes.pod.namespace", "dev"), want: []string{"dev"}},
		{name: "cnp peer naming the namespace, any source", scope: cnp, sel: nsExists, want: []string{"dev", "prod"}},
		{name: "cnp peer naming the namespace of another source", scope: cnp, sel: esel("container:io.kubernetes.pod.namespace", "dev")},
		{name: "cnp peer on a namespace label: every namespace", scope: cnp,
			sel: esel("io.cilium.k8s.namespace.labels.faction", "empire"), want: []string{"dev"}},
		{name: "cnp peer on a namespace label of source k8s", scope: cnp,
			sel: esel("k8s:io.cilium.k8s.namespace.labels.faction", "alliance"), want: []string{"prod"}},
		{name: "cnp peer on a namespace label, in an expression", scope: cnp, sel: factionIn, want: []string{"dev", "prod"}},
		{name: "cnp peer on a namespace label and a pod label", scope: cnp,
			sel: esel("io.cilium.k8s.namespace.labels.faction", "empire", "app", "web"), want: []string{"dev"}},
		{name: "cnp peer on a namespace label of another source", scope: cnp,
			sel: esel("container:io.cilium.k8s.namespace.labels.faction", "empire")},
		{name: "cnp peer on a key that only begins like namespace labels", scope: cnp,
			sel: esel("io.cilium.k8s.namespace.labelsfaction", "x")},
		{name: "cnp peer on a reserved label", scope: cnp, sel: esel("reserved:host", ""), want: []string{"host"}},
		{name: "cnp peer on a reserved label, Cilium's dotted spelling", scope: cnp, sel: esel("reserved.host", ""), want: []string{"host"}},
		{name: "cnp subject: its namespace", scope: cnp, subject: true, sel: policyapi.EndpointSelector{}, want: []string{"prod"}},
		{name: "cnp subject: another namespace in matchLabels is replaced", scope: cnp, subject: true,
			sel: esel("k8s:io.kubernetes.pod.namespace", "dev"), want: []string{"prod"}},
		{name: "cnp subject on a namespace label stays in its namespace", scope: cnp, subject: true,
			sel: esel("io.cilium.k8s.namespace.labels.faction", "empire")},

		// A CiliumClusterwideNetworkPolicy.
		{name: "ccnp peer {}: every endpoint with a namespace", scope: ccnp, sel: policyapi.EndpointSelector{}, want: []string{"dev", "prod"}},
		{name: "ccnp peer: endpoints with a namespace", scope: ccnp, sel: esel("app", "web"), want: []string{"dev", "prod"}},
		{name: "ccnp peer on a namespace label", scope: ccnp,
			sel: esel("io.cilium.k8s.namespace.labels.faction", "alliance"), want: []string{"prod"}},
		{name: "ccnp peer naming the namespace", scope: ccnp, sel: esel("io.kubernetes.pod.namespace", "dev"), want: []string{"dev"}},
		{name: "ccnp peer naming the namespace as absent", scope: ccnp, sel: policyapi.EndpointSelector{
			MatchExpressions: []policyapi.LabelSelectorRequirement{expr("k8s:io.kubernetes.pod.namespace", opDoesNotExist)},
		}, want: []string{"bare", "host", "init"}},
		{name: "ccnp peer on a reserved label", scope: ccnp, sel: esel("reserved:init", ""), want: []string{"init"}},
		{name: "ccnp peer of a rule for init endpoints: as written", scope: ccnp, subjectInit: true,
			sel: esel("app", "web"), want: []string{"bare", "dev", "prod"}},
		{name: "ccnp subject: as written", scope: ccnp, subject: true, sel: esel("app", "web"), want: []string{"bare", "dev", "prod"}},

		// A plain rule: as written.
		{name: "plain peer", scope: plain, sel: esel("app", "web"), want: []string{"bare", "dev", "prod"}},
		{name: "plain peer {}", scope: plain, sel: policyapi.EndpointSelector{}, want: []string{"bare", "dev", "host", "init", "prod"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s *labelSelector
			var err error
			if tc.subject {
				s, err = newSubjectSelector(tc.sel, tc.scope)
			} else {
				s, err = newPeerSelector(tc.sel, tc.scope, tc.subjectInit)
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, name := range slices.Sorted(maps.Keys(eps)) {
				if s.matchesLabels(eps[name]) {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s selects %v, want %v", s, got, tc.want)
			}
		})
	}
}

// A rule's endpointSelector names reserved:init in either spelling, in
// matchLabels or matchExpressions.
func TestNamesInit(t *testing.T) {
	for _, tc := range []struct {
		sel  *policyapi.EndpointSelector
		want bool
	}{
		{nil, false},
		{sel("reserved:init", ""), true},
		{sel("reserved.init", ""), true},
		{&policyapi.EndpointSelector{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("reserved:init", opExists)}}, true},
		{sel("init", ""), false},
		{sel("k8s:init", ""), false},
		{sel("reserved:host", ""), false},
	} {
		if got := namesInit(tc.sel); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.sel, got, tc.want)
		}
	}
}

// As a peer, a label selector sees cluster identities and reserved ones
// whose labels match; {} selects cluster identities only; CIDR
// identities are fromCIDR's.
func TestLabelSelectorPeers(t *testing.T) {
	host := identityFromRow(reserved()[0])
	world := identityFromRow(reserved()[1])
	web := identityFromRow(ident(256, "app=web"))
	cidr := cidrIdentity(tables.LocalIdentityFlag|1, netip.MustParsePrefix("10.0.0.0/8"))
	cases := []struct {
		name string
		sel  policyapi.EndpointSelector
		want map[tables.NumericIdentity]bool
	}{
		{"empty: cluster identities", policyapi.EndpointSelector{}, map[tables.NumericIdentity]bool{256: true}},
		{"reserved:host", esel("reserved:host", ""), map[tables.NumericIdentity]bool{1: true}},
		{"DoesNotExist also matches reserved identities", policyapi.EndpointSelector{
			MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opDoesNotExist)},
		}, map[tables.NumericIdentity]bool{1: true, 2: true}},
		{"app=web", esel("app", "web"), map[tables.NumericIdentity]bool{256: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newPeerSelector(tc.sel, ruleScope{}, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, info := range []*identityInfo{host, world, web, cidr} {
				if got := s.matches(info); got != tc.want[info.id] {
					t.Errorf("identity %d (%s): got %v, want %v", info.id, info.labels, got, tc.want[info.id])
				}
			}
		})
	}
}

func TestEntitySelectors(t *testing.T) {
	var infos []*identityInfo
	for _, r := range reserved() {
		infos = append(infos, identityFromRow(r))
	}
	v4 := cidrIdentity(tables.LocalIdentityFlag|1, netip.MustParsePrefix("10.0.0.0/8"))
	v6 := cidrIdentity(tables.LocalIdentityFlag|2, netip.MustParsePrefix("fd00::/64"))
	infos = append(infos, identityFromRow(ident(256, "app=web")), identityFromRow(ident(300, "app=db")), v4, v6)

	ids := func(ns ...tables.NumericIdentity) []tables.NumericIdentity { return ns }
	cases := map[policyapi.Entity][]tables.NumericIdentity{
		policyapi.EntityHost:          ids(1),
		policyapi.EntityWorld:         ids(2, 9, 10, v4.id, v6.id),
		policyapi.EntityWorldIPv4:     ids(9, v4.id),
		policyapi.EntityWorldIPv6:     ids(10, v6.id),
		policyapi.EntityUnmanaged:     ids(3),
		policyapi.EntityHealth:        ids(4),
		policyapi.EntityInit:          ids(5),
		policyapi.EntityRemoteNode:    ids(6),
		policyapi.EntityKubeAPIServer: ids(7),
		policyapi.EntityIngress:       ids(8),
		policyapi.EntityCluster:       ids(1, 3, 4, 5, 6, 256, 300),
	}
	for e, want := range cases {
		s, err := newEntitySelector(e)
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		var got []tables.NumericIdentity
		for _, info := range infos {
			if s.matches(info) {
				got = append(got, info.id)
			}
		}
		if !equalIDs(got, want) {
			t.Errorf("entity %s selects %v, want %v", e, got, want)
		}
	}
	if _, err := newEntitySelector("nonsense"); err == nil {
		t.Error("unknown entity: want an error")
	}
}

func equalIDs(a, b []tables.NumericIdentity) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCIDRSelector(t *testing.T) {
	p := netip.MustParsePrefix
	n := tables.LocalIdentityFlag
	infos := []*identityInfo{
		identityFromRow(reserved()[1]), // world 2
		identityFromRow(&tables.Identity{ID: 9, Labels: ls("reserved:world-ipv4")}),
		identityFromRow(&tables.Identity{ID: 10, Labels: ls("reserved:world-ipv6")}),
		cidrIdentity(n|1, p("10.0.0.0/8")),
		cidrIdentity(n|2, p("10.1.0.0/16")),
		cidrIdentity(n|3, p("10.1.2.0/24")),
		cidrIdentity(n|4, p("10.2.0.0/16")),
		cidrIdentity(n|5, p("192.168.0.0/16")),
		cidrIdentity(n|6, p("fd00::/8")),
		identityFromRow(ident(256, "app=web")),
	}
	ids := func(ns ...tables.NumericIdentity) []tables.NumericIdentity { return ns }
	cases := []struct {
		sel  *cidrSelector
		want []tables.NumericIdentity
	}{
		{newCIDRSelector(p("10.0.0.0/8"), nil), ids(n|1, n|2, n|3, n|4)},
		{newCIDRSelector(p("10.1.0.0/16"), nil), ids(n|2, n|3)},
		{newCIDRSelector(p("10.1.2.3/32"), nil), nil},
		{newCIDRSelector(p("10.0.0.0/8"), []netip.Prefix{p("10.1.0.0/16")}), ids(n|1, n|4)},
		{newCIDRSelector(p("10.0.0.0/8"), []netip.Prefix{p("10.1.0.0/16"), p("10.2.0.0/16")}), ids(n | 1)},
		{newCIDRSelector(p("0.0.0.0/0"), nil), ids(2, 9, n|1, n|2, n|3, n|4, n|5)},
		{newCIDRSelector(p("0.0.0.0/0"), []netip.Prefix{p("10.0.0.0/8")}), ids(2, 9, n|5)},
		{newCIDRSelector(p("::/0"), nil), ids(2, 10, n|6)},
	}
	for _, tc := range cases {
		var got []tables.NumericIdentity
		for _, info := range infos {
			if tc.sel.matches(info) {
				got = append(got, info.id)
			}
		}
		if !equalIDs(got, tc.want) {
			t.Errorf("%s selects %v, want %v", tc.sel, got, tc.want)
		}
	}
	a := newCIDRSelector(p("10.0.0.0/8"), []netip.Prefix{p("10.2.0.0/16"), p("10.1.0.0/16"), p("10.1.0.0/16")})
	b := newCIDRSelector(p("10.0.0.0/8"), []netip.Prefix{p("10.1.0.0/16"), p("10.2.0.0/16")})
	if a.key() != b.key() {
		t.Errorf("same CIDR set, keys %q and %q", a.key(), b.key())
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8":  "10.0.0.0/8",
		"10.1.2.3":    "10.1.2.3/32",
		"fd00::1":     "fd00::1/128",
		"fd00::1/64":  "fd00::/64",
		" 0.0.0.0/0 ": "0.0.0.0/0",
	} {
		got, err := parsePrefix(in)
		if err != nil || got.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "example.com", "fe80::1%eth0"} {
		if p, err := parsePrefix(in); err == nil {
			t.Errorf("parsePrefix(%q) = %v, want an error", in, p)
		}
	}
}
