package policy

import (
	"fmt"
	"net/netip"
	"slices"

	datapath "github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// section is one ingress/egress (deny) entry of a rule, resolved to what
// the computation needs: which peers (the wildcard, or selectors by key)
// and which ports.
type section struct {
	deny     bool
	wildcard bool     // any peer: entity "all", or ports without peers
	peers    []string // selector keys
	ports    []portProto
}

// compiledRule is a policy-rules row made ready for computation. It is
// built once per row and shared by every identity it selects.
type compiledRule struct {
	key  string
	row  *tables.PolicyRule
	desc string

	// scope is the rule's origin (namespaced, clusterwide or plain), which
	// scopes its selectors; subjectInit: its endpointSelector names
	// reserved:init (its clusterwide peers are then not scoped).
	scope       ruleScope
	subjectInit bool
	// subject selects the endpoints the rule applies to; nil selects none
	// (a rule with only a nodeSelector, or an invalid endpointSelector).
	subject *labelSelector
	// sections by direction (datapath.DirIngress, datapath.DirEgress).
	sections [2][]section
	// defaultDeny: the rule turns default deny on for the direction.
	defaultDeny [2]bool
	// selectors are the distinct peer selectors, by key.
	selectors map[string]identitySelector
	// prefixes are the distinct CIDRs (exceptions included) that need an
	// identity while the rule exists; /0 needs none (it is world).
	prefixes []netip.Prefix
	// held are the prefixes whose identity the controller acquired for
	// the rule (all of prefixes, unless allocation failed).
	held []netip.Prefix
	// problems are the parts of the rule that could not be used.
	problems []error
}

// peerFields is the part of an ingress/egress (deny) entry that names
// peers and ports; the four section types share it.
type peerFields struct {
	endpoints []policyapi.EndpointSelector
	entities  []policyapi.Entity
	cidrs     []string
	cidrSets  []policyapi.CIDRRule
	toPorts   []policyapi.PortRule
	icmps     []policyapi.ICMPRule
}

// compileRule resolves a row. Parts it cannot use are recorded in
// problems and select nothing; the rest of the rule still applies. (The
// policy API validates rules before they reach the table, so problems
// here mean a row written by something else.)
func compileRule(row *tables.PolicyRule) *compiledRule {
	r := &row.Rule
	c := &compiledRule{key: row.Key, row: row, desc: r.Description, selectors: map[string]identitySelector{},
		scope: scopeOf(row), subjectInit: namesInit(r.EndpointSelector)}
	if r.EndpointSelector != nil {
		sel, err := newSubjectSelector(*r.EndpointSelector, c.scope)
		if err != nil {
			c.problems = append(c.problems, fmt.Errorf("endpointSelector: %w", err))
		} else {
			c.subject = sel
		}
	}

	in, eg := datapath.DirIngress, datapath.DirEgress
	for i, s := range r.Ingress {
		c.addSection(in, false, fmt.Sprintf("ingress[%d]", i), peerFields{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, s.ToPorts, s.ICMPs})
	}
	for i, s := range r.IngressDeny {
		c.addSection(in, true, fmt.Sprintf("ingressDeny[%d]", i), peerFields{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, s.ToPorts, s.ICMPs})
	}
	for i, s := range r.Egress {
		c.addSection(eg, false, fmt.Sprintf("egress[%d]", i), peerFields{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, s.ToPorts, s.ICMPs})
	}
	for i, s := range r.EgressDeny {
		c.addSection(eg, true, fmt.Sprintf("egressDeny[%d]", i), peerFields{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, s.ToPorts, s.ICMPs})
	}

	// A rule with a section for a direction turns default deny on for
	// it, unless enableDefaultDeny says otherwise for that direction.
	c.defaultDeny[in] = len(r.Ingress)+len(r.IngressDeny) > 0
	c.defaultDeny[eg] = len(r.Egress)+len(r.EgressDeny) > 0
	if dd := r.EnableDefaultDeny; dd != nil {
		if dd.Ingress != nil && !*dd.Ingress {
			c.defaultDeny[in] = false
		}
		if dd.Egress != nil && !*dd.Egress {
			c.defaultDeny[eg] = false
		}
	}
	slices.SortFunc(c.prefixes, comparePrefix)
	c.prefixes = slices.Compact(c.prefixes)
	return c
}

func (c *compiledRule) addSection(dir uint8, deny bool, at string, f peerFields) {
	s := section{deny: deny}
	ports, errs := portProtosOf(f.toPorts, f.icmps)
	for _, err := range errs {
		c.problems = append(c.problems, fmt.Errorf("%s.%w", at, err))
	}
	s.ports = ports

	peers := 0
	for i, es := range f.endpoints {
		peers++
		sel, err := newPeerSelector(es, c.scope, c.subjectInit)
		if err != nil {
			c.problems = append(c.problems, fmt.Errorf("%s.%s[%d]: %w", at, peerField(dir, "Endpoints"), i, err))
			continue
		}
		c.addPeer(&s, sel)
	}
	for _, e := range f.entities {
		peers++
		if e == policyapi.EntityAll {
			s.wildcard = true
			continue
		}
		sel, err := newEntitySelector(e)
		if err != nil {
			c.problems = append(c.problems, fmt.Errorf("%s.%s: %w", at, peerField(dir, "Entities"), err))
			continue
		}
		c.addPeer(&s, sel)
	}
	for _, cidr := range f.cidrs {
		peers++
		p, err := parsePrefix(cidr)
		if err != nil {
			c.problems = append(c.problems, fmt.Errorf("%s.%s: %w", at, peerField(dir, "CIDR"), err))
			continue
		}
		c.addCIDR(&s, p, nil)
	}
	for i, cs := range f.cidrSets {
		peers++
		p, err := parsePrefix(cs.Cidr)
		if err != nil {
			c.problems = append(c.problems, fmt.Errorf("%s.%s[%d].cidr: %w", at, peerField(dir, "CIDRSet"), i, err))
			continue
		}
		var except []netip.Prefix
		for _, e := range cs.Except {
			ep, err := parsePrefix(e)
			if err != nil {
				c.problems = append(c.problems, fmt.Errorf("%s.%s[%d].except: %w", at, peerField(dir, "CIDRSet"), i, err))
				continue
			}
			except = append(except, ep)
		}
		c.addCIDR(&s, p, except)
	}
	// Ports (or nothing at all) without any peer: any peer. An entry
	// with neither peers nor ports (`ingress: [{}]`) allows nothing in
	// Cilium: it only turns default deny on.
	if peers == 0 && (len(f.toPorts) > 0 || len(f.icmps) > 0) {
		s.wildcard = true
	}
	slices.Sort(s.peers)
	s.peers = slices.Compact(s.peers)
	c.sections[dir] = append(c.sections[dir], s)
}

func (c *compiledRule) addPeer(s *section, sel identitySelector) {
	if old, ok := c.selectors[sel.key()]; ok {
		sel = old
	} else {
		c.selectors[sel.key()] = sel
	}
	s.peers = append(s.peers, sel.key())
}

func (c *compiledRule) addCIDR(s *section, p netip.Prefix, except []netip.Prefix) {
	for _, q := range append([]netip.Prefix{p}, except...) {
		if q.Bits() > 0 {
			c.prefixes = append(c.prefixes, q)
		}
	}
	c.addPeer(s, newCIDRSelector(p, except))
}

func peerField(dir uint8, what string) string {
	if dir == datapath.DirIngress {
		return "from" + what
	}
	return "to" + what
}

// selects reports whether the rule applies to an endpoint with labels ls.
func (c *compiledRule) selects(ls labels.Labels) bool {
	return c.subject != nil && c.subject.matchesLabels(ls)
}
