package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// snapshot computes policy from scratch over a fixed set of inputs: no
// cache, every selector matched against every identity. `policy trace`
// uses it, and the tests compare the controller's incremental results
// with it.
type snapshot struct {
	cfg        Config
	rules      []*compiledRule // by key
	identities map[tables.NumericIdentity]*identityInfo
	selectors  map[string]identitySelector
	memo       map[string][]tables.NumericIdentity
}

// newSnapshot takes the rules, the identities (rows of the local range are
// ignored: cidrs, prefix -> identity, says which CIDR identities exist).
func newSnapshot(cfg Config, rules []*tables.PolicyRule, idents []*tables.Identity, cidrs map[netip.Prefix]tables.NumericIdentity) *snapshot {
	s := &snapshot{
		cfg:        cfg,
		identities: map[tables.NumericIdentity]*identityInfo{},
		selectors:  map[string]identitySelector{},
		memo:       map[string][]tables.NumericIdentity{},
	}
	for _, row := range rules {
		r := compileRule(row)
		s.rules = append(s.rules, r)
		for k, sel := range r.selectors {
			s.selectors[k] = sel
		}
	}
	slices.SortFunc(s.rules, func(a, b *compiledRule) int { return strings.Compare(a.key, b.key) })
	for _, row := range idents {
		if kindOf(row.ID) != kindCIDR {
			s.identities[row.ID] = identityFromRow(row)
		}
	}
	for p, id := range cidrs {
		s.identities[id] = cidrIdentity(id, p)
	}
	return s
}

// addIdentity adds a (hypothetical) identity.
func (s *snapshot) addIdentity(info *identityInfo) {
	s.identities[info.id] = info
	clear(s.memo)
}

func (s *snapshot) selected(key string) []tables.NumericIdentity {
	if ids, ok := s.memo[key]; ok {
		return ids
	}
	sel := s.selectors[key]
	ids := []tables.NumericIdentity{}
	if sel != nil {
		for id, info := range s.identities {
			if sel.matches(info) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	s.memo[key] = ids
	return ids
}

// policyOf computes the policy of an endpoint identity with labels ls.
func (s *snapshot) policyOf(ls labels.Labels) *identityPolicy {
	return computePolicy(s.cfg, ls, slices.Values(s.rules), s)
}

// rule returns a rule by key.
func (s *snapshot) rule(key string) (*compiledRule, bool) {
	i, ok := slices.BinarySearchFunc(s.rules, key, func(r *compiledRule, k string) int { return strings.Compare(r.key, k) })
	if !ok {
		return nil, false
	}
	return s.rules[i], true
}

// endpointPolicy is the row the engine should hold for ep at policy
// revision rev, or nil if ep should have none.
func (s *snapshot) endpointPolicy(ep *tables.Endpoint, rev uint64) *tables.EndpointPolicy {
	if !wantsPolicy(ep) {
		return nil
	}
	info, ok := s.identities[ep.Identity]
	if !ok || info.kind == kindCIDR {
		return nil
	}
	return endpointRow(ep.ID, ep.Identity, rev, s.policyOf(info.labels))
}

// wantsPolicy reports whether an endpoint gets an endpoint-policy row: it
// has an identity and is neither waiting for one nor going away.
func wantsPolicy(ep *tables.Endpoint) bool {
	if ep.Identity == tables.IdentityUnknown {
		return false
	}
	switch ep.State {
	case tables.StateWaitingForIdentity, tables.StateDisconnecting, tables.StateDisconnected, tables.StateInvalid:
		return false
	}
	return true
}
