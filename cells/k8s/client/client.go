// Package client is the Kubernetes mode's connection cell: it provides the
// *client.Clientset (package k8s/client) every cell of the mode uses,
// built from --k8s-kubeconfig or, inside a pod, from the in-cluster
// service-account config, and the node's name (--node-name). Without
// either config the clientset is disabled and the mode's cells do nothing.
//
// It also keeps the k8s-status table: whether the API server answers
// (a probe of /readyz every few seconds) and, through Status, whether each
// watcher of the group has synced its cache and its last error.
// Try it: membrane status; membrane statedb k8s-status.
package client

import (
	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"

	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// Config of the connection.
type Config struct {
	K8sKubeconfig string
	NodeName      string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("k8s-kubeconfig", def.K8sKubeconfig,
		"Kubeconfig file of the Kubernetes API server: turns on the Kubernetes mode (pods, namespaces, policies and identities from the cluster). Inside a pod the service-account config is used without it")
	fs.String("node-name", def.NodeName,
		"Name of this node in the cluster: the agent watches the pods scheduled here (default: $NODE_NAME, then the hostname)")
}

// Cell provides *k8sclient.Clientset and *Status, and probes the API
// server.
var Cell = cell.Module(
	"k8s-client",
	"Kubernetes API server connection",

	cell.Config(Config{}),
	cell.Provide(newClientset, newStatus),
	cell.Invoke(registerProbe),
)

func newClientset(cfg Config) (*k8sclient.Clientset, error) {
	return k8sclient.New(cfg.K8sKubeconfig, cfg.NodeName)
}
