package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"
)

// Config of the IPAM cell.
type Config struct {
	// PodCIDR is the IPv4 range pods get addresses from ("" with
	// PodCIDRV6 set: IPv6 only).
	PodCIDR string
	// PodCIDRV6 is the IPv6 range; empty means IPv4 only.
	PodCIDRV6 string
}

// DefaultConfig is IPv4 only, from 10.200.0.0/24.
var DefaultConfig = Config{PodCIDR: "10.200.0.0/24"}

const (
	flagPodCIDR   = "pod-cidr"
	flagPodCIDRV6 = "pod-cidr-v6"
)

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String(flagPodCIDR, def.PodCIDR,
		"IPv4 range pod addresses are allocated from; the first address is the pods' gateway (router) and never handed out. Empty for an IPv6-only node (then --pod-cidr-v6 is required)")
	fs.String(flagPodCIDRV6, def.PodCIDRV6,
		"IPv6 range pod addresses are allocated from (e.g. fd00:200::/64); empty: IPv4 only. When set, every pod gets one address of each family")
}

// Family is an IP address family: IPv4 or IPv6. The zero value (AnyFamily)
// in a request means "every configured family".
type Family string

const (
	AnyFamily Family = ""
	IPv4      Family = "ipv4"
	IPv6      Family = "ipv6"
)

// ParseFamily accepts "", "ipv4" and "ipv6" (also "4"/"6", any case).
func ParseFamily(s string) (Family, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return AnyFamily, nil
	case "ipv4", "4", "v4":
		return IPv4, nil
	case "ipv6", "6", "v6":
		return IPv6, nil
	}
	return "", fmt.Errorf("%w: family %q: must be \"ipv4\", \"ipv6\" or empty (every configured family)", ErrInvalid, s)
}

// parseConfig validates the flags and builds one pool per configured
// family. Every error names the flag and says what a valid value looks like.
func parseConfig(c Config) (v4, v6 *pool, err error) {
	if strings.TrimSpace(c.PodCIDR) == "" && strings.TrimSpace(c.PodCIDRV6) == "" {
		return nil, nil, errors.New("IPAM: no pod CIDR configured: set --pod-cidr (e.g. 10.200.0.0/24) and/or --pod-cidr-v6 (e.g. fd00:200::/64)")
	}
	if s := strings.TrimSpace(c.PodCIDR); s != "" {
		if v4, err = parseCIDR(flagPodCIDR, s, IPv4); err != nil {
			return nil, nil, err
		}
	}
	if s := strings.TrimSpace(c.PodCIDRV6); s != "" {
		if v6, err = parseCIDR(flagPodCIDRV6, s, IPv6); err != nil {
			return nil, nil, err
		}
	}
	return v4, v6, nil
}

// Smallest ranges that still leave one address for a pod: a /30 holds
// network, router, one pod and broadcast; a /126 holds the subnet-router
// anycast address, the router and two pods.
const (
	maxBitsV4 = 30
	maxBitsV6 = 126
)

func parseCIDR(flag, s string, fam Family) (*pool, error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("IPAM: --%s=%q is not a CIDR (want e.g. %s): %w", flag, s, example(fam), err)
	}
	addr := pfx.Addr()
	switch {
	case fam == IPv4 && !addr.Is4():
		return nil, fmt.Errorf("IPAM: --%s=%s is not an IPv4 range; put IPv6 ranges in --%s", flag, s, flagPodCIDRV6)
	case fam == IPv6 && addr.Is4():
		return nil, fmt.Errorf("IPAM: --%s=%s is an IPv4 range; put it in --%s", flag, s, flagPodCIDR)
	case fam == IPv6 && addr.Is4In6():
		return nil, fmt.Errorf("IPAM: --%s=%s is an IPv4-mapped range; use a real IPv6 range (e.g. %s) or --%s for IPv4", flag, s, example(IPv6), flagPodCIDR)
	}
	if pfx.Masked() != pfx {
		return nil, fmt.Errorf("IPAM: --%s=%s has host bits set: did you mean %s?", flag, s, pfx.Masked())
	}
	if addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() || addr.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("IPAM: --%s=%s is not usable for pods (unspecified, loopback, multicast or link-local range); use a private range such as %s", flag, s, example(fam))
	}
	maxBits := maxBitsV4
	if fam == IPv6 {
		maxBits = maxBitsV6
	}
	if pfx.Bits() > maxBits {
		return nil, fmt.Errorf("IPAM: --%s=%s is too small: it leaves no address for a pod once the network, router and broadcast addresses are reserved; use /%d or wider", flag, s, maxBits)
	}
	return newPool(fam, flag, pfx), nil
}

func example(fam Family) string {
	if fam == IPv6 {
		return "fd00:200::/64"
	}
	return "10.200.0.0/24"
}
