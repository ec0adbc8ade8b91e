package ipam

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// fakeSource is a PodCIDRSource with fixed answers.
type fakeSource struct {
	cidrs []string
	err   error
	calls int
}

func (f *fakeSource) PodCIDRs(context.Context) (string, []string, error) {
	f.calls++
	return "spec.podCIDRs of Node n1", f.cidrs, f.err
}

func newModeIPAM(t *testing.T, cfg Config, src PodCIDRSource) (*IPAM, error) {
	t.Helper()
	db := statedb.New()
	tbl, err := tables.NewIPAMTable(db)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := statedir.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newIPAM(hivetest.Logger(t), db, tbl, sd, cfg, src)
}

// --ipam=kubernetes: the pools are the source's, --pod-cidr is ignored,
// and nothing is handed out before start.
func TestKubernetesModePools(t *testing.T) {
	src := &fakeSource{cidrs: []string{"10.44.0.0/24", "fd00:44::/64"}}
	m, err := newModeIPAM(t, Config{PodCIDR: "10.200.0.0/24", IPAM: "kubernetes"}, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Allocate("a:eth0", "", AnyFamily); !errors.Is(err, ErrNotReady) {
		t.Fatalf("allocation before start: %v, want ErrNotReady", err)
	}
	if err := m.resolve(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.start(); err != nil {
		t.Fatal(err)
	}
	res := mustAllocate(t, m, "a:eth0", AnyFamily)
	if res.IPv4 == nil || res.IPv4.CIDR.String() != "10.44.0.0/24" || res.IPv6 == nil || res.IPv6.CIDR.String() != "fd00:44::/64" {
		t.Fatalf("allocation %+v %+v, want one address of each of the Node's CIDRs", res.IPv4, res.IPv6)
	}
	// resolve is idempotent: the source is asked once.
	if err := m.resolve(t.Context()); err != nil || src.calls != 1 {
		t.Fatalf("second resolve: %v, %d calls to the source", err, src.calls)
	}
}

// An IPv4-only Node: asking for IPv6 says where the CIDRs come from.
func TestKubernetesModeOneFamily(t *testing.T) {
	m, err := newModeIPAM(t, Config{IPAM: "Kubernetes"}, &fakeSource{cidrs: []string{"10.44.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.resolve(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.start(); err != nil {
		t.Fatal(err)
	}
	_, err = m.Allocate("a:eth0", "", IPv6)
	if !errors.Is(err, ErrFamilyNotConfigured) || !strings.Contains(err.Error(), "spec.podCIDRs") {
		t.Fatalf("IPv6 on an IPv4-only Node: %v", err)
	}
}

func TestModeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		src  PodCIDRSource
		want []string
	}{
		{"unknown mode", Config{PodCIDR: "10.200.0.0/24", IPAM: "cluster-pool"}, nil, []string{"--ipam=\"cluster-pool\"", "local", "kubernetes"}},
		{"kubernetes without Kubernetes mode", Config{IPAM: "kubernetes"}, nil, []string{"--ipam=kubernetes", "Kubernetes mode", "--k8s-kubeconfig", "--ipam=local"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newModeIPAM(t, tc.cfg, tc.src)
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
	// The source failing (no CIDRs in time) fails the start.
	m, err := newModeIPAM(t, Config{IPAM: "kubernetes"}, &fakeSource{err: errors.New("no spec.podCIDRs after 2m")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.resolve(t.Context()); err == nil || !strings.Contains(err.Error(), "no spec.podCIDRs") {
		t.Fatalf("resolve with a failing source: %v", err)
	}
}

func TestParseNodeCIDRs(t *testing.T) {
	v4, v6, err := parseNodeCIDRs("spec.podCIDRs of Node n1", []string{"fd00:1::/64", "10.1.0.0/24"})
	if err != nil || v4 == nil || v4.cidr.String() != "10.1.0.0/24" || v6 == nil || v6.cidr.String() != "fd00:1::/64" {
		t.Fatalf("dual stack in either order: %v %v %v", v4, v6, err)
	}
	if v4, v6, err := parseNodeCIDRs("x", []string{"fd00:1::/64"}); err != nil || v4 != nil || v6 == nil {
		t.Fatalf("IPv6 only: %v %v %v", v4, v6, err)
	}
	for _, tc := range []struct {
		cidrs []string
		want  string
	}{
		{nil, "is empty"},
		{[]string{"10.1.0.0/24", "10.2.0.0/24"}, "two ipv4 ranges"},
		{[]string{"10.1.0.0"}, "not a CIDR"},
		{[]string{"10.1.0.0/31"}, "too small"},
		{[]string{"127.0.0.0/24"}, "not usable"},
	} {
		_, _, err := parseNodeCIDRs("spec.podCIDRs of Node n1", tc.cidrs)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.podCIDRs of Node n1") {
			t.Errorf("%v: %v, want an error naming the Node and saying %q", tc.cidrs, err, tc.want)
		}
	}
}
