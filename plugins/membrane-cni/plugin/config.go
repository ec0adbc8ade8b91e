package plugin

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-net/membrane/api/client"

	"github.com/membrane-net/membrane/internal/clip"
)

// Defaults of the network configuration.
const (
	DefaultSocket   = client.DefaultSocket
	DefaultStateDir = "/var/lib/membrane"
	DefaultMTU      = 1500

	// MinMTU is the smallest MTU IPv4 allows; IPv6 needs MinMTUv6.
	MinMTU   = 68
	MinMTUv6 = 1280
	MaxMTU   = 65535
)

// NetConf is the plugin's entry in a CNI network configuration list:
//
//	{"type": "membrane-cni", "socket": "/var/run/membrane/membrane.sock",
//	 "stateDir": "/var/lib/membrane", "mtu": 1500}
//
// Fields the runtime adds (runtimeConfig, capabilities, prevResult, args,
// cni.dev/valid-attachments) are accepted; unknown fields are ignored, as the
// CNI spec asks of plugins.
type NetConf struct {
	types.PluginConf

	// Socket is the agent's API socket.
	Socket string `json:"socket,omitempty"`
	// StateDir is the agent's --state-dir: a DEL the agent cannot take
	// (it is down) is queued there for it (internal/delqueue).
	StateDir string `json:"stateDir,omitempty"`
	// MTU of both ends of the veth pair.
	MTU *int `json:"mtu,omitempty"`

	// RuntimeConfig is what the runtime passes for the capabilities the
	// plugin declares. Membrane declares none; containerd sends its keys
	// anyway (portMappings with capitalised keys, pod annotations), so it
	// is kept raw and never interpreted.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
}

// mtu is the configured MTU or the default.
func (c *NetConf) mtu() int {
	if c.MTU == nil {
		return DefaultMTU
	}
	return *c.MTU
}

// LoadConf parses and validates the configuration on the plugin's stdin.
func LoadConf(data []byte) (*NetConf, error) {
	conf, err := parseConf(data)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(conf.Socket) {
		return nil, fmt.Errorf("invalid network configuration %s: \"socket\" must be an absolute path, got %s",
			clip.Quote(conf.Name), clip.Quote(conf.Socket))
	}
	if !filepath.IsAbs(conf.StateDir) {
		return nil, fmt.Errorf("invalid network configuration %q: \"stateDir\" must be an absolute path, got %q",
			conf.Name, conf.StateDir)
	}
	if conf.MTU != nil && (*conf.MTU < MinMTU || *conf.MTU > MaxMTU) {
		return nil, fmt.Errorf("invalid network configuration %s: \"mtu\" %d is out of range %d..%d",
			clip.Quote(conf.Name), *conf.MTU, MinMTU, MaxMTU)
	}
	return conf, nil
}

// parseConf only decodes (and fills defaults): DEL and GC use it so that a
// configuration that was edited into something invalid can still clean up.
func parseConf(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("invalid network configuration: %w", err)
	}
	if conf.Socket == "" {
		conf.Socket = DefaultSocket
	}
	if conf.StateDir == "" {
		conf.StateDir = DefaultStateDir
	}
	return conf, nil
}

// PodArgs are the Kubernetes keys of CNI_ARGS.
type PodArgs struct {
	Namespace string
	Name      string
	UID       string
}

// Ref is "namespace/name", or "" when the runtime named no pod.
func (a PodArgs) Ref() string {
	if a.Name == "" {
		return ""
	}
	return a.Namespace + "/" + a.Name
}

// DefaultNamespace is the pod namespace when the runtime gives only a pod
// name (podman sends K8S_POD_NAME=<container name> and nothing else).
const DefaultNamespace = "default"

// ParseArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from
// CNI_ARGS ("K=V;K=V"). Runtimes differ in order and in the other keys they
// send (IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID, ...), so any other key is
// ignored rather than rejected: refusing a pod over a key we do not read
// helps nobody. A pair without "=" is an error, as it is for libcni.
func ParseArgs(s string) (PodArgs, error) {
	var a PodArgs
	for _, pair := range strings.Split(s, ";") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return PodArgs{}, fmt.Errorf("invalid CNI_ARGS pair %s: want KEY=VALUE", clip.Quote(pair))
		}
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	if a.Name == "" {
		// Without a pod name there is no pod to refer to.
		return PodArgs{}, nil
	}
	if a.Namespace == "" {
		a.Namespace = DefaultNamespace
	}
	return a, nil
}
