package policy

import (
	"cmp"
	"maps"
	"slices"

	datapath "github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Pseudo rule keys of entries no rule wrote (they appear in RuleKeys and
// in traces).
const (
	// RuleAllowLocalhost: the host may reach enforced endpoints
	// (--allow-localhost=always).
	RuleAllowLocalhost = "(allow-localhost)"
	// RuleNoDefaultDeny: a direction without default deny that has deny
	// entries is enforced with an allow-all entry under the denies.
	RuleNoDefaultDeny = "(no-default-deny)"
)

// entrySet collects the allow and deny entries of one endpoint identity
// and turns them into the minimal, deterministic list the datapath gets.
//
// It is the one place where deny takes precedence over allow. The
// datapath looks a packet up twice, under the peer's identity and under
// identity 0, each a longest-prefix match over protocol then port, and
// drops the packet if either lookup finds a deny. Within one identity
// only the longest match counts, so the set makes sure that no allow
// entry of an identity overlaps a deny entry of the same identity that
// applies to its protocol: allows covered by such a deny are dropped, and
// allows partly covered are cut around it. A deny of one protocol under an
// allow of every protocol needs nothing: the deny is the longer match.
// Across identity 0 and a specific identity both entries stay: the
// datapath's two lookups resolve them.
//
// This has to happen on port ranges, before the loader expands each entry
// into LPM keys (datapath/maps.PolicyKeys): an allow and a deny that
// overlap rarely share a key (a deny of every TCP port is one short key,
// an allow of TCP 80 a long one, which the lookup would prefer), so no
// merging of keys could give the deny precedence. The loader therefore
// only translates, and refuses a row that asks one key for both verdicts;
// the entries written are also what traces and `membrane statedb
// endpoint-policy` show, so they show the verdicts the datapath applies.
type entrySet struct {
	m map[entryKey]*entryVal
}

type entryKey struct {
	dir      uint8
	identity tables.NumericIdentity
	pp       portProto
	deny     bool
}

type entryVal struct {
	rules map[string]struct{}
}

func newEntrySet() *entrySet { return &entrySet{m: map[entryKey]*entryVal{}} }

func (s *entrySet) add(dir uint8, id tables.NumericIdentity, pp portProto, deny bool, rule string) {
	k := entryKey{dir: dir, identity: id, pp: pp, deny: deny}
	v := s.m[k]
	if v == nil {
		v = &entryVal{rules: map[string]struct{}{}}
		s.m[k] = v
	}
	v.rules[rule] = struct{}{}
}

// hasDeny reports whether the set holds a deny entry in direction dir.
func (s *entrySet) hasDeny(dir uint8) bool {
	for k := range s.m {
		if k.deny && k.dir == dir {
			return true
		}
	}
	return false
}

type groupKey struct {
	dir      uint8
	identity tables.NumericIdentity
}

type pending struct {
	pp    portProto
	rules map[string]struct{}
}

// entries returns the final entries, sorted by key, denies after allows
// of the same key (which cannot both remain).
func (s *entrySet) entries() []tables.PolicyEntry {
	groups := map[groupKey][2][]pending{} // [allows, denies]
	for k, v := range s.m {
		g := groups[groupKey{k.dir, k.identity}]
		i := 0
		if k.deny {
			i = 1
		}
		g[i] = append(g[i], pending{pp: k.pp, rules: v.rules})
		groups[groupKey{k.dir, k.identity}] = g
	}
	var out []tables.PolicyEntry
	for gk, g := range groups {
		denies := dropCovered(g[1])
		allows := dropCovered(carve(g[0], denies))
		for _, d := range denies {
			out = appendEntry(out, gk, d, true)
		}
		for _, a := range allows {
			out = appendEntry(out, gk, a, false)
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

func appendEntry(out []tables.PolicyEntry, gk groupKey, p pending, deny bool) []tables.PolicyEntry {
	port, endPort, ok := p.pp.policyPorts()
	if !ok {
		return out
	}
	return append(out, tables.PolicyEntry{
		Key: tables.PolicyKey{
			Direction: gk.dir, Identity: gk.identity, Protocol: p.pp.proto,
			Port: port, EndPort: endPort,
		},
		Deny:     deny,
		RuleKeys: slices.Sorted(maps.Keys(p.rules)),
	})
}

// dropCovered removes the entries another entry of the list covers; the
// rules of identical entries are merged.
func dropCovered(list []pending) []pending {
	// Broadest first (every-protocol entries, then by width), so an entry
	// can only be covered by one before it.
	slices.SortFunc(list, func(a, b pending) int {
		return cmp.Or(
			compareBool(a.pp.proto != datapath.ProtoAny, b.pp.proto != datapath.ProtoAny),
			cmp.Compare(int(b.pp.hi)-int(b.pp.lo), int(a.pp.hi)-int(a.pp.lo)),
			cmp.Compare(a.pp.proto, b.pp.proto),
			cmp.Compare(a.pp.lo, b.pp.lo),
		)
	})
	var out []pending
	for _, p := range list {
		i := slices.IndexFunc(out, func(o pending) bool { return o.pp.covers(p.pp) })
		switch {
		case i < 0:
			out = append(out, pending{pp: p.pp, rules: maps.Clone(p.rules)})
		case out[i].pp == p.pp:
			maps.Copy(out[i].rules, p.rules)
		}
	}
	return out
}

// carve cuts from each allow the ports of the denies that apply to its
// protocol (a deny of its protocol or of every protocol).
func carve(allows, denies []pending) []pending {
	var out []pending
	for _, a := range allows {
		pieces := []portProto{a.pp}
		for _, d := range denies {
			if d.pp.proto != datapath.ProtoAny && d.pp.proto != a.pp.proto {
				continue
			}
			var next []portProto
			for _, p := range pieces {
				next = append(next, subtract(p, d.pp)...)
			}
			pieces = next
		}
		for _, p := range pieces {
			out = append(out, pending{pp: p, rules: a.rules})
		}
	}
	return out
}

// subtract returns the parts of p's range outside d's range.
func subtract(p, d portProto) []portProto {
	if d.hi < p.lo || d.lo > p.hi {
		return []portProto{p}
	}
	var out []portProto
	if d.lo > p.lo {
		out = append(out, portProto{proto: p.proto, lo: p.lo, hi: d.lo - 1})
	}
	if d.hi < p.hi {
		out = append(out, portProto{proto: p.proto, lo: d.hi + 1, hi: p.hi})
	}
	return out
}

func compareEntries(a, b tables.PolicyEntry) int {
	ka, kb := a.Key, b.Key
	return cmp.Or(
		cmp.Compare(ka.Direction, kb.Direction),
		cmp.Compare(ka.Identity, kb.Identity),
		cmp.Compare(ka.Protocol, kb.Protocol),
		cmp.Compare(ka.Port, kb.Port),
		cmp.Compare(ka.EndPort, kb.EndPort),
		compareBool(a.Deny, b.Deny),
	)
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// endpointRow is the endpoint-policy row of an endpoint with the given
// identity policy. Entries are shared between rows: rows are immutable.
func endpointRow(epID uint16, id tables.NumericIdentity, rev uint64, p *identityPolicy) *tables.EndpointPolicy {
	entries := p.entries
	if entries == nil {
		entries = []tables.PolicyEntry{}
	}
	return &tables.EndpointPolicy{
		EndpointID:      epID,
		Identity:        id,
		Revision:        rev,
		IngressEnforced: p.ingressEnforced,
		EgressEnforced:  p.egressEnforced,
		Entries:         entries,
	}
}
