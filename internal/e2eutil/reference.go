package e2eutil

import (
	"net/netip"
)

// RefPluginDir is where Debian's containernetworking-plugins live: the
// reference plugins (ptp, host-local, loopback) the benchmarks measure
// Membrane against.
const RefPluginDir = "/usr/lib/cni"

// PTPConflist is the reference network: ptp with host-local IPAM on
// subnet, its state under dataDir.
func PTPConflist(name string, subnet netip.Prefix, dataDir string) map[string]any {
	gw := subnet.Addr().Next()
	// ptp cannot route the pod's own subnet via the gateway (the address
	// already put that route there): route the /16 around it, as Debian's
	// example does. The route exists only inside the pods.
	wide, _ := subnet.Addr().Prefix(16)
	return map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{map[string]any{
			"type": "ptp", "mtu": 1500,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  []any{[]any{map[string]any{"subnet": subnet.String(), "gateway": gw.String()}}},
				"routes":  []any{map[string]any{"dst": wide.String(), "gw": gw.String()}},
				"dataDir": dataDir,
			},
		}},
	}
}
