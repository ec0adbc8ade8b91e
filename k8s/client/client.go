// Package client is the agent's connection to the Kubernetes API server:
// the typed clientsets (core, apiextensions, and Membrane's own for the
// cilium.io/v2 objects), built from a kubeconfig file or, inside a pod,
// from the in-cluster service-account config, with the node's name.
//
// It is a library, not a cell: the cells of the Kubernetes mode get a
// *Clientset from cells/k8s/client, which owns the flags, and any cell
// may ask for one (hive provides it) without importing another cell.
package client

import (
	"errors"
	"fmt"
	"os"

	apiextclientset "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clientset is the connection. Its clients are nil when IsEnabled is false.
type Clientset struct {
	kubernetes.Interface
	// APIExtensions registers the CRDs.
	APIExtensions apiextclientset.Interface
	// CiliumV2 reads and writes the cilium.io/v2 objects.
	CiliumV2 *CiliumV2
	// RESTConfig builds further clients.
	RESTConfig *rest.Config
	// NodeName is this node's name.
	NodeName string
	// Server is the API server's address, for status and logs.
	Server string
}

// IsEnabled reports whether the agent runs in Kubernetes mode.
func (c *Clientset) IsEnabled() bool { return c != nil && c.Interface != nil }

// New connects with the kubeconfig file, or with the in-cluster config
// when kubeconfig is "" and the agent runs in a pod. Neither: a disabled
// Clientset (Kubernetes mode off), not an error. nodeName "" means
// $NODE_NAME, then the hostname.
func New(kubeconfig, nodeName string) (*Clientset, error) {
	rc, err := restConfig(kubeconfig)
	if err != nil || rc == nil {
		return &Clientset{}, err
	}
	node, err := resolveNodeName(nodeName)
	if err != nil {
		return nil, err
	}
	// The agent's writes are few (coalesced); the default 5 QPS would
	// still throttle a burst of pod starts.
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "membrane-agent"
	return ForConfig(rc, node)
}

// ForConfig builds the clientsets of a REST config.
func ForConfig(rc *rest.Config, nodeName string) (*Clientset, error) {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ext, err := apiextclientset.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes apiextensions client: %w", err)
	}
	cv2, err := NewCiliumV2(rc)
	if err != nil {
		return nil, err
	}
	return &Clientset{Interface: kc, APIExtensions: ext, CiliumV2: cv2, RESTConfig: rc, NodeName: nodeName, Server: rc.Host}, nil
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

// resolveNodeName is the flag, else $NODE_NAME, else the hostname.
func resolveNodeName(flag string) (string, error) {
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
