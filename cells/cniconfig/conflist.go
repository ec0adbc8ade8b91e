package cniconfig

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// NetworkName is the "name" of the network in the conflist Membrane writes.
const NetworkName = "membrane"

// CNIVersion is the conflist's "cniVersion", and CNIVersions its
// "cniVersions" (CNI 1.1): libcni v1.2 and later (containerd 2.0) use the
// newest entry of cniVersions they implement, 1.1.0, which brings GC and
// STATUS; older libcni ignores the list and uses cniVersion. A plain
// "cniVersion": "1.1.0" would break the runtimes most nodes run:
// containerd 1.6/1.7 and podman 4 (libcni v1.1) reject a 1.1.0 result
// ("unsupported CNI result version"), so every ADD would fail.
const CNIVersion = "1.0.0"

// CNIVersions, see CNIVersion.
var CNIVersions = []string{"1.0.0", "1.1.0"}

// Conf says what goes into the conflist.
type Conf struct {
	// Socket is the agent's API socket the plugin talks to.
	Socket string
	// StateDir is the agent's --state-dir, where the plugin queues the
	// DELs it cannot hand to a stopped agent.
	StateDir string
	// MTU of the pods' veth pairs.
	MTU int
	// Loopback appends the reference "loopback" plugin, which brings up
	// the pod's lo. containerd's CRI plugin and podman do that
	// themselves; a bare libcni client (cnitool, a home-made runtime) does
	// not.
	Loopback bool
}

// conflist is the file's layout; the field order is the order written.
type conflist struct {
	CNIVersion  string   `json:"cniVersion"`
	CNIVersions []string `json:"cniVersions"`
	Name        string   `json:"name"`
	Plugins     []any    `json:"plugins"`
}

type membranePlugin struct {
	Type     string `json:"type"`
	Socket   string `json:"socket"`
	StateDir string `json:"stateDir"`
	MTU      int    `json:"mtu"`
}

type loopbackPlugin struct {
	Type string `json:"type"`
}

// Conflist renders the CNI network configuration list:
//
//	{"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "membrane",
//	 "plugins": [{"type": "membrane-cni", "socket": "/var/run/membrane/membrane.sock",
//	              "stateDir": "/var/lib/membrane", "mtu": 1500}]}
//
// With Loopback, {"type": "loopback"} follows membrane-cni: chained last it
// passes membrane-cni's result through unchanged, so the runtime still
// sees the pod's eth0 and addresses. (A runtime on libcni v1.2+ runs the
// chain as 1.1.0: its loopback must be containernetworking-plugins v1.4
// or later.)
func Conflist(c Conf) ([]byte, error) {
	if !filepath.IsAbs(c.Socket) {
		return nil, fmt.Errorf("the plugin needs the agent's socket as an absolute path, got %q", c.Socket)
	}
	if !filepath.IsAbs(c.StateDir) {
		return nil, fmt.Errorf("the plugin needs the agent's state dir as an absolute path, got %q", c.StateDir)
	}
	if c.MTU < 68 || c.MTU > 65535 {
		return nil, fmt.Errorf("MTU %d is out of range 68..65535", c.MTU)
	}
	l := conflist{
		CNIVersion:  CNIVersion,
		CNIVersions: CNIVersions,
		Name:        NetworkName,
		Plugins:     []any{membranePlugin{Type: "membrane-cni", Socket: c.Socket, StateDir: c.StateDir, MTU: c.MTU}},
	}
	if c.Loopback {
		l.Plugins = append(l.Plugins, loopbackPlugin{Type: "loopback"})
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
