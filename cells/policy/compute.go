package policy

import (
	"iter"
	"slices"

	datapath "github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// selections tells which identities a peer selector selects: the
// controller answers from its selector cache, a trace or a test from a
// scan of a snapshot.
type selections interface {
	selected(key string) []tables.NumericIdentity
}

// identityPolicy is the computed policy of one endpoint identity, shared
// by every endpoint with that identity.
type identityPolicy struct {
	ingressEnforced bool
	egressEnforced  bool
	entries         []tables.PolicyEntry
	// rules are the keys of the rules selecting the identity, sorted.
	rules []string
	// defaultDenyBy are the keys of the rules that turned default deny on,
	// by direction (for traces).
	defaultDenyBy [2][]string
	// deps are the peer selectors the result depends on: when the
	// identities one of them selects change, the policy is recomputed.
	deps []string
}

// sameDesired reports whether two results ask the datapath for the same.
func (p *identityPolicy) sameDesired(o *identityPolicy) bool {
	return p.ingressEnforced == o.ingressEnforced && p.egressEnforced == o.egressEnforced &&
		slices.EqualFunc(p.entries, o.entries, func(a, b tables.PolicyEntry) bool {
			return a.Key == b.Key && a.Deny == b.Deny && slices.Equal(a.RuleKeys, b.RuleKeys)
		})
}

// computePolicy computes the policy of an endpoint identity with labels
// ls from the rules (any order) and the selections of their peers.
//
// Per direction:
//   - default deny is on if --enable-policy=always, or if a rule selecting
//     the identity has a section for the direction and does not turn
//     enableDefaultDeny off for it (--enable-policy=never: nothing at all);
//   - with default deny, the direction is enforced: allow sections add
//     entries, deny sections add deny entries, and what matches no allow
//     is dropped; --allow-localhost=always adds an ingress allow of the
//     host;
//   - without it, deny sections still apply: the direction is enforced
//     with an allow-all entry under the denies; with no deny either, it
//     is not enforced and has no entries.
func computePolicy(cfg Config, ls labels.Labels, rules iter.Seq[*compiledRule], sel selections) *identityPolicy {
	p := &identityPolicy{}
	if cfg.EnablePolicy == EnforcementNever {
		return p
	}
	var (
		matched     []*compiledRule
		defaultDeny [2]bool
		deps        []string
	)
	for r := range rules {
		if !r.selects(ls) {
			continue
		}
		matched = append(matched, r)
		p.rules = append(p.rules, r.key)
		for d := range defaultDeny {
			if r.defaultDeny[d] {
				defaultDeny[d] = true
				p.defaultDenyBy[d] = append(p.defaultDenyBy[d], r.key)
			}
		}
		for k := range r.selectors {
			deps = append(deps, k)
		}
	}
	if cfg.EnablePolicy == EnforcementAlways {
		defaultDeny = [2]bool{true, true}
	}

	set := newEntrySet()
	for _, r := range matched {
		for dir, sections := range r.sections {
			for _, s := range sections {
				if !s.deny && !defaultDeny[dir] {
					continue // allows change nothing without default deny
				}
				addSection(set, uint8(dir), s, r.key, sel)
			}
		}
	}
	enforced := [2]bool{}
	for dir := range enforced {
		switch {
		case defaultDeny[dir]:
			enforced[dir] = true
		case set.hasDeny(uint8(dir)):
			enforced[dir] = true
			set.add(uint8(dir), 0, allPorts, false, RuleNoDefaultDeny)
		}
	}
	if defaultDeny[datapath.DirIngress] && cfg.AllowLocalhost == AllowLocalhostAlways {
		set.add(datapath.DirIngress, tables.IdentityHost, allPorts, false, RuleAllowLocalhost)
	}
	p.ingressEnforced, p.egressEnforced = enforced[datapath.DirIngress], enforced[datapath.DirEgress]
	p.entries = set.entries()
	slices.Sort(p.rules)
	for d := range p.defaultDenyBy {
		slices.Sort(p.defaultDenyBy[d])
	}
	slices.Sort(deps)
	p.deps = slices.Compact(deps)
	return p
}

func addSection(set *entrySet, dir uint8, s section, rule string, sel selections) {
	for _, pp := range s.ports {
		if s.wildcard {
			set.add(dir, 0, pp, s.deny, rule)
		}
		for _, k := range s.peers {
			for _, id := range sel.selected(k) {
				set.add(dir, id, pp, s.deny, rule)
			}
		}
	}
}
