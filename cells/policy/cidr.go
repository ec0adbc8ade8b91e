package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/membrane-net/membrane/statedb/tables"
)

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
