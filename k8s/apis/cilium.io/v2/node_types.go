package v2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// CiliumNode is a node of the cluster as its agent announces it: named
// like the Kubernetes node, with the node's addresses and the pod CIDRs
// its agent allocates pod addresses from.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	Spec NodeSpec `json:"spec"`
}

// NodeSpec is a node's addressing.
type NodeSpec struct {
	// Addresses are the node's addresses.
	Addresses []NodeAddress `json:"addresses,omitempty"`

	// IPAM is where the node's pod addresses come from.
	IPAM IPAMSpec `json:"ipam,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	Type AddressType `json:"type,omitempty"`
	IP   string      `json:"ip,omitempty"`
}

// AddressType says what a node address is, with Kubernetes' names
// (NodeAddressType in k8s.io/api/core/v1).
type AddressType string

// Address types Membrane writes.
const (
	NodeInternalIP AddressType = "InternalIP"
	NodeExternalIP AddressType = "ExternalIP"
)

// IPAMSpec is a node's address management.
type IPAMSpec struct {
	// PodCIDRs are the prefixes (an IPv4 one, an IPv6 one, or both) the
	// node's pods get their addresses from.
	PodCIDRs []string `json:"podCIDRs,omitempty"`
}

// CiliumNodeList is a list of CiliumNodes.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`

	Items []CiliumNode `json:"items"`
}
