package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/membrane-net/membrane/statedb/tables"
)

// IPCacheSource is the Source of the ipcache rows the engine writes for
// the CIDR identities of rules.
const IPCacheSource = "cidr-policy"

// maxCIDRIdentities is how many local identities fit below the flag.
const maxCIDRIdentities = tables.LocalIdentityFlag - 1

// errCIDRExhausted is returned (wrapped) when every local identity is taken.
var errCIDRExhausted = errors.New("CIDR identities exhausted")

// parsePrefix reads a CIDR of a rule; a bare address is a host prefix.
// The result is masked ("10.1.2.3/8" is 10.0.0.0/8).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: want an address or prefix (10.0.0.0/8, fd00::/64)", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: zones are not allowed", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// inside reports whether prefix q lies inside prefix p (p contains q).
func inside(q, p netip.Prefix) bool {
	return q.Addr().BitLen() == p.Addr().BitLen() && p.Bits() <= q.Bits() && p.Contains(q.Addr())
}

// cidrSelector selects the CIDR identities whose prefix lies inside its
// prefix and inside none of its exceptions: 10.0.0.0/8 also selects the
// identity of 10.1.0.0/16 that another rule allocated. Each exception has
// an identity of its own (longest-prefix match in the ipcache gives it to
// the addresses it covers) that the selector does not select.
//
// A /0 prefix has no CIDR identity of its own: it stands for world, so it
// selects world (and world-ipv4 or world-ipv6 by family) on top of every
// CIDR identity of its family.
type cidrSelector struct {
	prefix netip.Prefix
	except []netip.Prefix // sorted, distinct
	k      string
}

func newCIDRSelector(prefix netip.Prefix, except []netip.Prefix) *cidrSelector {
	except = slices.Clone(except)
	slices.SortFunc(except, comparePrefix)
	except = slices.Compact(except)
	k := "cidr:" + prefix.String()
	if len(except) > 0 {
		parts := make([]string, len(except))
		for i, e := range except {
			parts[i] = e.String()
		}
		k += " except " + strings.Join(parts, ",")
	}
	return &cidrSelector{prefix: prefix, except: except, k: k}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func (s *cidrSelector) key() string    { return s.k }
func (s *cidrSelector) String() string { return s.k }

func (s *cidrSelector) matches(id *identityInfo) bool {
	if s.prefix.Bits() == 0 {
		switch id.id {
		case tables.IdentityWorld:
			return true
		case tables.IdentityWorldIPv4:
			return s.prefix.Addr().Is4()
		case tables.IdentityWorldIPv6:
			return s.prefix.Addr().Is6()
		}
	}
	if id.kind != kindCIDR || !inside(id.prefix, s.prefix) {
		return false
	}
	for _, e := range s.except {
		if inside(id.prefix, e) {
			return false
		}
	}
	return true
}

// cidrAllocator hands out the local identities of the prefixes rules use,
// LocalIdentityFlag | n with the lowest free n from 1, and counts the
// rules using each prefix: a prefix's identity goes when its last rule does.
//
// Numbers restored from the previous run are reserved for their prefix:
// the prefix gets its number back and no other prefix takes it until the
// reservations are dropped, so the kernel's ipcache (which outlives the
// agent) and the recomputed policies agree across a restart.
type cidrAllocator struct {
	byPrefix map[netip.Prefix]*cidrAllocation
	used     map[tables.NumericIdentity]netip.Prefix
	reserved map[netip.Prefix]tables.NumericIdentity // restored, not acquired yet
	// taken holds every n in use or reserved, sorted and distinct, so
	// the lowest free n is the first gap (found by binary search).
	taken []tables.NumericIdentity
}

type cidrAllocation struct {
	id   tables.NumericIdentity
	refs int
}

func newCIDRAllocator() *cidrAllocator {
	return &cidrAllocator{
		byPrefix: map[netip.Prefix]*cidrAllocation{},
		used:     map[tables.NumericIdentity]netip.Prefix{},
		reserved: map[netip.Prefix]tables.NumericIdentity{},
	}
}

// reserve keeps id for p: the next acquire of p returns it, and no other
// prefix gets it until unreserve.
func (a *cidrAllocator) reserve(p netip.Prefix, id tables.NumericIdentity) error {
	n := id &^ tables.LocalIdentityFlag
	switch {
	case !p.IsValid() || p != p.Masked() || p.Bits() == 0:
		return fmt.Errorf("prefix %s cannot have a CIDR identity", p)
	case id&tables.LocalIdentityFlag == 0 || n == 0 || n > maxCIDRIdentities:
		return fmt.Errorf("%d is not a local identity", id)
	}
	if _, ok := a.byPrefix[p]; ok || a.reserved[p] != 0 {
		return fmt.Errorf("%s already has an identity", p)
	}
	i, found := slices.BinarySearch(a.taken, n)
	if found {
		return fmt.Errorf("identity %d is already taken", id)
	}
	a.taken = slices.Insert(a.taken, i, n)
	a.reserved[p] = id
	return nil
}

// unreserve frees the numbers reserved for prefixes that were not
// acquired.
func (a *cidrAllocator) unreserve() {
	for _, id := range a.reserved {
		a.untake(id)
	}
	clear(a.reserved)
}

// acquire takes a reference on p's identity, allocating it if p had none
// (isNew).
func (a *cidrAllocator) acquire(p netip.Prefix) (id tables.NumericIdentity, isNew bool, err error) {
	if al := a.byPrefix[p]; al != nil {
		al.refs++
		return al.id, false, nil
	}
	if rid, ok := a.reserved[p]; ok {
		delete(a.reserved, p)
		id = rid
	} else {
		// The first i where taken[i] != i+1: n = i+1 is free and every
		// smaller number is taken.
		i := sort.Search(len(a.taken), func(i int) bool { return a.taken[i] != tables.NumericIdentity(i+1) })
		n := tables.NumericIdentity(i + 1)
		if n > maxCIDRIdentities {
			return 0, false, fmt.Errorf("allocate a CIDR identity for %s: %w: all %d are used by rules; use fewer distinct prefixes", p, errCIDRExhausted, maxCIDRIdentities)
		}
		a.taken = slices.Insert(a.taken, i, n)
		id = tables.LocalIdentityFlag | n
	}
	a.byPrefix[p] = &cidrAllocation{id: id, refs: 1}
	a.used[id] = p
	return id, true, nil
}

// release drops a reference on p's identity; gone reports that it was
// the last and the identity is free again.
func (a *cidrAllocator) release(p netip.Prefix) (id tables.NumericIdentity, gone bool) {
	al := a.byPrefix[p]
	if al == nil {
		return 0, false
	}
	if al.refs--; al.refs > 0 {
		return al.id, false
	}
	delete(a.byPrefix, p)
	delete(a.used, al.id)
	a.untake(al.id)
	return al.id, true
}

// untake makes id's number free again.
func (a *cidrAllocator) untake(id tables.NumericIdentity) {
	if i, found := slices.BinarySearch(a.taken, id&^tables.LocalIdentityFlag); found {
		a.taken = slices.Delete(a.taken, i, i+1)
	}
}

// lookup returns p's identity, if it has one.
func (a *cidrAllocator) lookup(p netip.Prefix) (tables.NumericIdentity, bool) {
	if al := a.byPrefix[p]; al != nil {
		return al.id, true
	}
	return 0, false
}

// snapshot returns every prefix and its identity.
func (a *cidrAllocator) snapshot() map[netip.Prefix]tables.NumericIdentity {
	out := make(map[netip.Prefix]tables.NumericIdentity, len(a.byPrefix))
	for p, al := range a.byPrefix {
		out[p] = al.id
	}
	return out
}
