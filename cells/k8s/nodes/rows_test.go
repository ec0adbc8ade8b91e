package nodes

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
)

func cn(name string, age time.Duration, ip string, cidrs ...string) *v2.CiliumNode {
	o := &v2.CiliumNode{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age))}}
	if ip != "" {
		o.Spec.Addresses = []v2.NodeAddress{{Type: v2.NodeInternalIP, IP: ip}, {Type: v2.NodeExternalIP, IP: "203.0.113.1"}}
	}
	o.Spec.IPAM.PodCIDRs = cidrs
	return o
}

func TestRows(t *testing.T) {
	rows := Rows([]*v2.CiliumNode{
		cn("c-newer", time.Minute, "192.168.1.3", "10.2.0.0/16"),        // overlaps b's /24, b is older
		cn("b", time.Hour, "192.168.1.2", "10.2.1.0/24", "fd00:2::/64"), // routed
		cn("a", 0, "192.168.1.1", "10.1.0.0/24"),                        // local, youngest: still wins
		cn("d", 2*time.Hour, "192.168.1.4", "10.1.0.128/25"),            // overlaps the local node's
		cn("e", time.Hour, "", "10.5.0.0/24"),                           // no InternalIP
		cn("f", time.Hour, "not-an-ip", "10.6.0.0/24"),
		cn("g", time.Hour, "192.168.1.7", "10.7.0.0/33"),
		cn("h", time.Hour, "192.168.1.1", "10.8.0.0/24"), // the local node's address
	}, "a")
	got := map[string]string{}
	for _, r := range rows {
		got[r.Name] = r.Refused
	}
	for name, want := range map[string]string{
		"a": "", "b": "",
		"c-newer": "pod CIDR 10.2.0.0/16 overlaps 10.2.1.0/24 of node b",
		"d":       "overlaps 10.1.0.0/24 of node a",
		"e":       "no InternalIP",
		"f":       `spec.addresses[0].ip "not-an-ip"`,
		"g":       `spec.ipam.podCIDRs[0] "10.7.0.0/33"`,
		"h":       "this node's own",
	} {
		if want == "" && got[name] != "" || !strings.Contains(got[name], want) {
			t.Errorf("node %s refused %q, want %q", name, got[name], want)
		}
	}
	if rows[0].Name != "a" || !rows[0].Local || rows[0].Routed() {
		t.Errorf("local row: %+v", rows[0])
	}
	b := rows[1]
	if !b.Routed() || b.InternalIPs[0] != netip.MustParseAddr("192.168.1.2") || len(b.OtherIPs) != 1 ||
		len(b.PodCIDRs) != 2 || b.PodCIDRs[1] != netip.MustParsePrefix("fd00:2::/64") {
		t.Errorf("row b: %+v", b)
	}
}

func TestParseNodeIPs(t *testing.T) {
	if ips, err := parseNodeIPs([]string{"192.168.1.1", "fd00::1"}); err != nil || len(ips) != 2 {
		t.Fatalf("%v %v", ips, err)
	}
	for _, bad := range [][]string{{"x"}, {"192.168.1.1", "192.168.1.2"}} {
		if _, err := parseNodeIPs(bad); err == nil || !strings.Contains(err.Error(), "--node-ip") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
