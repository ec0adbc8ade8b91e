package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// With --pod-cidr-v6 every pod gets an address of each family: both are
// configured in the pod, both gateways answer, both addresses map to the
// pod's identity in the ipcache, and DEL releases both.
func TestDualStack(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{DualStack: true})
	n := newNetwork(t, a, "", nil)
	a.putPod("shop", "web", map[string]string{"app": "web"})
	p := newPod(t, "shop", "web")
	if err := n.add(p); err != nil {
		t.Fatal(err)
	}
	v4, v6 := p.IP(), p.IPv6()
	if !a.PodCIDR.Contains(v4) || !a.PodCIDRv6.Contains(v6) {
		t.Fatalf("addresses %s and %s, want one in %s and one in %s", v4, v6, a.PodCIDR, a.PodCIDRv6)
	}
	ep := a.endpoint(p.Attachment())
	if ep.Addressing.IPv4 != v4.String() || ep.Addressing.IPv6 != v6.String() {
		t.Errorf("endpoint addressing %+v, ADD gave %s and %s", ep.Addressing, v4, v6)
	}
	cache := a.IPCache()
	for _, pfx := range []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)} {
		if id, ok := cache[pfx]; !ok || id != ep.Identity.ID {
			t.Errorf("ipcache[%s] = %d (present %v), want %d", pfx, id, ok, ep.Identity.ID)
		}
	}
	for _, ipc := range p.Result.IPs {
		if err := ping(p, ipc.Gateway.String()); err != nil {
			t.Error(err)
		}
	}
	if err := n.check(p); err != nil {
		t.Error(err)
	}
	if err := n.del(p); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, p, v4)
	e2eutil.Eventually(t, 10*time.Second, "the IPv6 ipcache entry is removed", func() error {
		if id, ok := a.IPCache()[netip.PrefixFrom(v6, 128)]; ok {
			return fmt.Errorf("%s -> %d", v6, id)
		}
		return nil
	})
}
