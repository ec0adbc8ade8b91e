// Package client is the Kubernetes mode's connection to the API server:
// the typed clientsets every cell of the group uses, built from
// --k8s-kubeconfig or, inside a pod, from the in-cluster service-account
// config, and the node's name (--node-name). Without either config the
// clientset is disabled and the group's cells do nothing.
package client

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"
	apiextclientset "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config of the connection.
type Config struct {
	K8sKubeconfig string
	NodeName      string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("k8s-kubeconfig", def.K8sKubeconfig,
		"Kubeconfig file of the Kubernetes API server: turns on the Kubernetes mode (pods and namespaces from the cluster). Inside a pod the service-account config is used without it")
	fs.String("node-name", def.NodeName,
		"Name of this node in the cluster: the agent watches the pods scheduled here (default: $NODE_NAME, then the hostname)")
}

// Cell provides *Clientset.
var Cell = cell.Module(
	"k8s-client",
	"Kubernetes API server connection",

	cell.Config(Config{}),
	cell.Provide(newClientset),
)

// Clientset is the connection. Its clients are nil when IsEnabled is false.
type Clientset struct {
	kubernetes.Interface
	// APIExtensions registers the CRDs.
	APIExtensions apiextclientset.Interface
	// RESTConfig builds further clients (the cilium.io/v2 objects).
	RESTConfig *rest.Config
	// NodeName is this node's name.
	NodeName string
	// Server is the API server's address, for status and logs.
	Server string
}

// IsEnabled reports whether the agent runs in Kubernetes mode.
func (c *Clientset) IsEnabled() bool { return c != nil && c.Interface != nil }

func newClientset(cfg Config) (*Clientset, error) {
	rc, err := restConfig(cfg.K8sKubeconfig)
	if err != nil || rc == nil {
		return &Clientset{}, err
	}
	node, err := nodeName(cfg.NodeName)
	if err != nil {
		return nil, err
	}
	// The agent's writes are few (coalesced); the default 5 QPS would
	// still throttle a burst of pod starts.
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "membrane-agent"
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ext, err := apiextclientset.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes apiextensions client: %w", err)
	}
	return &Clientset{Interface: kc, APIExtensions: ext, RESTConfig: rc, NodeName: node, Server: rc.Host}, nil
}

// restConfig reads the kubeconfig, or the in-cluster config when the agent
// runs in a pod; nil when neither applies (Kubernetes mode off).
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--k8s-kubeconfig=%s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, nil
	}
	rc, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
	}
	return rc, nil
}

// nodeName is --node-name, else $NODE_NAME, else the hostname.
func nodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	n, err := os.Hostname()
	if err != nil || n == "" {
		return "", fmt.Errorf("--node-name is needed: no $NODE_NAME and no hostname (%v)", err)
	}
	return n, nil
}
