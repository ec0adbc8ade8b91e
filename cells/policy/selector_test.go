package policy

import (
	"net/netip"
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
			s, err := newLabelSelector(tc.sel, "", false)
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
		if s, err := newLabelSelector(es, "", false); err == nil {
			t.Errorf("%+v: want an error, got selector %s", es, s)
		}
	}
}

// The same selector written differently has one key, so the cache holds
// it once; different selectors have different keys.
func TestLabelSelectorKey(t *testing.T) {
	key := func(es policyapi.EndpointSelector, ns string) string {
		s, err := newLabelSelector(es, ns, false)
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

func TestNamespaceRestriction(t *testing.T) {
	prodWeb := ls("app=web", "io.kubernetes.pod.namespace=prod")
	devWeb := ls("app=web", "io.kubernetes.pod.namespace=dev")
	cases := []struct {
		name     string
		sel      policyapi.EndpointSelector
		force    bool // a rule's endpointSelector
		prod     bool
		dev      bool
		emptySel bool
	}{
		{name: "peer restricted to the rule's namespace", sel: esel("app", "web"), prod: true},
		{name: "empty peer selector: the rule's namespace", sel: policyapi.EndpointSelector{}, prod: true},
		{name: "peer naming the namespace label is not restricted", sel: esel("k8s:io.kubernetes.pod.namespace", "dev"), dev: true},
		{name: "peer naming the namespace in an expression", sel: policyapi.EndpointSelector{
			MatchExpressions: []policyapi.LabelSelectorRequirement{expr("io.kubernetes.pod.namespace", opExists)},
		}, prod: true, dev: true},
		{name: "subject always restricted", sel: esel("k8s:io.kubernetes.pod.namespace", "dev"), force: true},
		{name: "empty subject: the namespace's endpoints", sel: policyapi.EndpointSelector{}, force: true, prod: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newLabelSelector(tc.sel, "prod", tc.force)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.matchesLabels(prodWeb); got != tc.prod {
				t.Errorf("prod endpoint: got %v, want %v", got, tc.prod)
			}
			if got := s.matchesLabels(devWeb); got != tc.dev {
				t.Errorf("dev endpoint: got %v, want %v", got, tc.dev)
			}
		})
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
			s, err := newLabelSelector(tc.sel, "", false)
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
