package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidation(t *testing.T) {
	bad := []struct {
		name string
		cfg  Config
		want []string // substrings the error must contain
	}{
		{"nothing", Config{}, []string{"--pod-cidr", "--pod-cidr-v6"}},
		{"not a prefix", Config{PodCIDR: "10.200.0.0"}, []string{"--pod-cidr=", "not a CIDR", "10.200.0.0/24"}},
		{"garbage", Config{PodCIDR: "pods"}, []string{"not a CIDR"}},
		{"host bits", Config{PodCIDR: "10.200.0.7/24"}, []string{"host bits", "did you mean 10.200.0.0/24"}},
		{"v4 too small /31", Config{PodCIDR: "10.200.0.0/31"}, []string{"too small", "/30 or wider"}},
		{"v4 too small /32", Config{PodCIDR: "10.200.0.1/32"}, []string{"too small"}},
		{"v6 in v4 flag", Config{PodCIDR: "fd00::/64"}, []string{"not an IPv4 range", "--pod-cidr-v6"}},
		{"v4 in v6 flag", Config{PodCIDRV6: "10.0.0.0/24"}, []string{"--pod-cidr-v6", "IPv4 range", "--pod-cidr"}},
		{"v4-mapped in v6 flag", Config{PodCIDRV6: "::ffff:10.0.0.0/120"}, []string{"IPv4-mapped"}},
		{"v6 too small", Config{PodCIDR: "10.200.0.0/24", PodCIDRV6: "fd00::/127"}, []string{"--pod-cidr-v6", "too small", "/126"}},
		{"loopback", Config{PodCIDR: "127.0.0.0/8"}, []string{"not usable for pods"}},
		{"multicast v6", Config{PodCIDRV6: "ff02::/64"}, []string{"not usable for pods"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseConfig(tc.cfg)
			if err == nil {
				t.Fatalf("config %+v accepted", tc.cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	good := []struct {
		cfg    Config
		v4, v6 string // expected router addresses ("" = family off)
	}{
		{DefaultConfig, "10.200.0.1", ""},
		{Config{PodCIDR: " 10.200.0.0/30 "}, "10.200.0.1", ""},
		{Config{PodCIDRV6: "fd00:200::/64"}, "", "fd00:200::1"},
		{Config{PodCIDR: "10.0.0.0/8", PodCIDRV6: "fd00::/126"}, "10.0.0.1", "fd00::1"},
	}
	for _, tc := range good {
		v4, v6, err := parseConfig(tc.cfg)
		if err != nil {
			t.Errorf("config %+v rejected: %v", tc.cfg, err)
			continue
		}
		for _, c := range []struct {
			p    *pool
			want string
		}{{v4, tc.v4}, {v6, tc.v6}} {
			switch {
			case c.want == "" && c.p != nil:
				t.Errorf("config %+v: unexpected pool %s", tc.cfg, c.p.cidr)
			case c.want != "" && (c.p == nil || c.p.router != netip.MustParseAddr(c.want)):
				t.Errorf("config %+v: want router %s, got pool %+v", tc.cfg, c.want, c.p)
			}
		}
	}
}

func TestPoolLayout(t *testing.T) {
	for _, tc := range []struct {
		cidr                string
		fam                 Family
		router, first, last string
		usable              uint64
	}{
		{"10.200.0.0/24", IPv4, "10.200.0.1", "10.200.0.2", "10.200.0.254", 253},
		{"10.200.0.0/30", IPv4, "10.200.0.1", "10.200.0.2", "10.200.0.2", 1},
		{"10.0.0.0/8", IPv4, "10.0.0.1", "10.0.0.2", "10.255.255.254", 1<<24 - 3},
		{"fd00::/126", IPv6, "fd00::1", "fd00::2", "fd00::3", 2},
		{"fd00:1:2:3::/64", IPv6, "fd00:1:2:3::1", "fd00:1:2:3::2", "fd00:1:2:3:ffff:ffff:ffff:ffff", 1<<64 - 1},
		{"fd00::/48", IPv6, "fd00::1", "fd00::2", "fd00::ffff:ffff:ffff:ffff:ffff", 1<<64 - 1},
	} {
		p := newPool(tc.fam, "test", netip.MustParsePrefix(tc.cidr))
		if p.router.String() != tc.router || p.first.String() != tc.first || p.last.String() != tc.last || p.usable != tc.usable {
			t.Errorf("%s: router %s first %s last %s usable %d; want %s %s %s %d",
				tc.cidr, p.router, p.first, p.last, p.usable, tc.router, tc.first, tc.last, tc.usable)
		}
	}
}

func TestParseFamily(t *testing.T) {
	for in, want := range map[string]Family{"": AnyFamily, "ipv4": IPv4, "IPv6": IPv6, "4": IPv4} {
		if got, err := ParseFamily(in); err != nil || got != want {
			t.Errorf("ParseFamily(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFamily("ipx"); err == nil {
		t.Error("ParseFamily(ipx) accepted")
	}
}
