package regeneration

import (
	"net/netip"
	"testing"

	"github.com/membrane-net/membrane/statedb/tables"
)

// The ipcache rows of an endpoint name its host veth, for eBPF host
// routing (docs/datapath.md#host-routing); an endpoint without one yet
// has rows without it.
func TestDesiredIPCacheRowsCarryTheHostVeth(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::2")
	ep := &tables.Endpoint{ID: 3, IPv4: podIP, IPv6: v6, Identity: 300, HostIfIndex: 17, MAC: "02:00:00:00:00:02", HostMAC: "02:00:00:00:00:01"}
	ipc, epm := desired(ep, nil)
	if len(ipc) != 2 {
		t.Fatalf("%d ipcache rows, want 2", len(ipc))
	}
	for _, e := range ipc {
		if e.IfIndex != 17 || e.EndpointID != 3 || e.Identity != 300 {
			t.Errorf("ipcache row %+v, want ifindex 17 of endpoint 3, identity 300", e)
		}
	}
	if epm == nil || epm.IfIndex != 17 || epm.MAC != ep.MAC || epm.HostMAC != ep.HostMAC {
		t.Errorf("endpoint map row %+v", epm)
	}
	ep.HostIfIndex = 0
	ipc, epm = desired(ep, nil)
	if ipc[0].IfIndex != 0 || epm != nil {
		t.Errorf("without a host veth: ipcache ifindex %d, endpoint map row %+v", ipc[0].IfIndex, epm)
	}
}
