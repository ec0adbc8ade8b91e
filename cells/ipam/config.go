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
	// IPAM is where the pod CIDRs come from: ModeLocal (the flags above)
	// or ModeKubernetes (this node's Node object); "" is ModeLocal.
	IPAM string
}

// DefaultConfig is IPv4 only, from 10.200.0.0/24.
var DefaultConfig = Config{PodCIDR: "10.200.0.0/24", IPAM: ModeLocal}

// The values of --ipam.
const (
	// ModeLocal: the pod CIDRs are --pod-cidr and --pod-cidr-v6.
	ModeLocal = "local"
	// ModeKubernetes: the pod CIDRs are spec.podCIDRs of this node's
	// Node object, as the controller manager assigns them
	// (--allocate-node-cidrs); --pod-cidr and --pod-cidr-v6 are ignored.
	ModeKubernetes = "kubernetes"
)

const (
	flagPodCIDR   = "pod-cidr"
	flagPodCIDRV6 = "pod-cidr-v6"
	flagIPAM      = "ipam"
)

// Kubernetes reports whether the pod CIDRs come from the Node object
// (--ipam=kubernetes). An invalid --ipam is refused by the IPAM cell.
func (c Config) Kubernetes() bool {
	return strings.TrimSpace(strings.ToLower(c.IPAM)) == ModeKubernetes
}

// checkMode validates --ipam.
func checkMode(c Config) error {
	switch strings.TrimSpace(strings.ToLower(c.IPAM)) {
	case "", ModeLocal, ModeKubernetes:
		return nil
	}
	return fmt.Errorf("IPAM: --%s=%q: want %q (the pod CIDRs are --%s and --%s) or %q (they are spec.podCIDRs of this node's Node object, Kubernetes mode only)",
		flagIPAM, c.IPAM, ModeLocal, flagPodCIDR, flagPodCIDRV6, ModeKubernetes)
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String(flagIPAM, def.IPAM,
		"Where the pod CIDRs come from: \"local\" (--pod-cidr and --pod-cidr-v6) or \"kubernetes\" (spec.podCIDRs of this node's Node object, as the controller manager assigns them with --allocate-node-cidrs; needs Kubernetes mode; the agent waits for them at start, up to 2 minutes, and --pod-cidr and --pod-cidr-v6 are ignored)")
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
		if v4, err = parseCIDR("--"+flagPodCIDR, s, IPv4); err != nil {
			return nil, nil, err
		}
	}
	if s := strings.TrimSpace(c.PodCIDRV6); s != "" {
		if v6, err = parseCIDR("--"+flagPodCIDRV6, s, IPv6); err != nil {
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

// parseCIDR checks one family's range; what names where it comes from in
// messages ("--pod-cidr", "spec.podCIDRs of Node x").
func parseCIDR(what, s string, fam Family) (*pool, error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("IPAM: %s=%q is not a CIDR (want e.g. %s): %w", what, s, example(fam), err)
	}
	addr := pfx.Addr()
	switch {
	case fam == IPv4 && !addr.Is4():
		return nil, fmt.Errorf("IPAM: %s=%s is not an IPv4 range; put IPv6 ranges in --%s", what, s, flagPodCIDRV6)
	case fam == IPv6 && addr.Is4():
		return nil, fmt.Errorf("IPAM: %s=%s is an IPv4 range; put it in --%s", what, s, flagPodCIDR)
	case fam == IPv6 && addr.Is4In6():
		return nil, fmt.Errorf("IPAM: %s=%s is an IPv4-mapped range; use a real IPv6 range (e.g. %s) or --%s for IPv4", what, s, example(IPv6), flagPodCIDR)
	}
	if pfx.Masked() != pfx {
		return nil, fmt.Errorf("IPAM: %s=%s has host bits set: did you mean %s?", what, s, pfx.Masked())
	}
	if addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() || addr.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("IPAM: %s=%s is not usable for pods (unspecified, loopback, multicast or link-local range); use a private range such as %s", what, s, example(fam))
	}
	maxBits := maxBitsV4
	if fam == IPv6 {
		maxBits = maxBitsV6
	}
	if pfx.Bits() > maxBits {
		return nil, fmt.Errorf("IPAM: %s=%s is too small: it leaves no address for a pod once the network, router and broadcast addresses are reserved; use /%d or wider", what, s, maxBits)
	}
	return newPool(fam, what, pfx), nil
}

func example(fam Family) string {
	if fam == IPv6 {
		return "fd00:200::/64"
	}
	return "10.200.0.0/24"
}

// parseNodeCIDRs builds the pools from the pod CIDRs of a Node object
// (at most one per family, as Kubernetes allows); what names the object
// in messages.
func parseNodeCIDRs(what string, cidrs []string) (v4, v6 *pool, err error) {
	for _, s := range cidrs {
		pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, fmt.Errorf("IPAM: %s=%q is not a CIDR: %w", what, s, err)
		}
		fam, dst := IPv4, &v4
		if !pfx.Addr().Is4() {
			fam, dst = IPv6, &v6
		}
		if *dst != nil {
			return nil, nil, fmt.Errorf("IPAM: %s has two %s ranges (%s): want at most one per family", what, fam, strings.Join(cidrs, ","))
		}
		if *dst, err = parseCIDR(what, s, fam); err != nil {
			return nil, nil, err
		}
	}
	if v4 == nil && v6 == nil {
		return nil, nil, fmt.Errorf("IPAM: %s is empty", what)
	}
	return v4, v6, nil
}
