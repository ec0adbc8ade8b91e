package v2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// CiliumEndpoint is one endpoint (a pod's interface) as the agent of its
// node reports it: `kubectl get cep -n NS` lists a namespace's endpoints
// with their ID, identity, enforcement, state and addresses. It has the
// pod's namespace and name, and only a status: the agent writes it with
// the object (the CRD has no status subresource, as in Cilium).
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	Status EndpointStatus `json:"status"`
}

// EndpointStatus is what the agent reports of an endpoint: the fields of
// Cilium's status that Membrane fills, under Cilium's names.
type EndpointStatus struct {
	// ID is the endpoint's ID on its node (`membrane endpoint get ID`).
	ID int64 `json:"id,omitempty"`

	// Identity is the endpoint's security identity.
	Identity *EndpointIdentity `json:"identity,omitempty"`

	// Networking holds the endpoint's addresses and its node.
	Networking *EndpointNetworking `json:"networking,omitempty"`

	// State is the endpoint's lifecycle state (docs/endpoint-lifecycle.md):
	// waiting-for-identity, waiting-to-regenerate, regenerating, ready,
	// not-ready, restoring, disconnecting, disconnected, invalid. The CRD
	// refuses any other value, as Cilium's does (which also has creating).
	State string `json:"state,omitempty"`

	// Policy says whether policy is enforced in each direction.
	Policy *EndpointPolicy `json:"policy,omitempty"`
}

// EndpointIdentity is an endpoint's security identity.
type EndpointIdentity struct {
	// ID is the numeric identity.
	ID int64 `json:"id,omitempty"`

	// Labels are the identity's labels, "source:key=value", sorted.
	Labels []string `json:"labels,omitempty"`
}

// EndpointNetworking is an endpoint's addressing.
type EndpointNetworking struct {
	// Addressing lists the endpoint's addresses, one pair per interface
	// (Membrane: one). The schema requires it: set it, at least to an
	// empty list, whenever Networking is set (nil is sent as null and
	// refused).
	Addressing []AddressPair `json:"addressing"`

	// NodeIP names the node the endpoint runs on. Membrane writes the
	// node's name (the name of its CiliumNode, which holds its
	// addresses); Cilium writes the node's IP here.
	NodeIP string `json:"node,omitempty"`
}

// AddressPair is an IPv4 and/or an IPv6 address.
type AddressPair struct {
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
}

// EndpointPolicy is an endpoint's policy enforcement, per direction.
type EndpointPolicy struct {
	Ingress *EndpointPolicyDirection `json:"ingress,omitempty"`
	Egress  *EndpointPolicyDirection `json:"egress,omitempty"`
}

// EndpointPolicyDirection is the enforcement of one direction. (Cilium
// also lists allowed and denied identities here; Membrane does not:
// `membrane bpf policy get ID` shows them.)
type EndpointPolicyDirection struct {
	// Enforcing is true when the direction is default deny: only what
	// rules allow passes. Required by the schema, hence never omitted.
	Enforcing bool `json:"enforcing"`

	// State is Enforcing as a word, which the Ingress/Egress Enforcement
	// columns of `kubectl get cep` show.
	State EndpointPolicyState `json:"state,omitempty"`
}

// EndpointPolicyState is the enforcement of a direction, as a word.
type EndpointPolicyState string

// The values of EndpointPolicyState, as Cilium spells them.
const (
	// PolicyEnforcing: rules select the endpoint in this direction;
	// what they do not allow is dropped.
	PolicyEnforcing EndpointPolicyState = "enforcing"
	// PolicyNonEnforcing: no rule selects the endpoint in this direction;
	// everything passes.
	PolicyNonEnforcing EndpointPolicyState = "non-enforcing"
	// PolicyDisabled: the agent enforces no policy at all
	// (--enable-policy=never).
	PolicyDisabled EndpointPolicyState = "disabled"
)

// NewEndpointPolicyDirection describes a direction: enforcing or not, and
// the word for it (disabled when the agent enforces no policy at all).
func NewEndpointPolicyDirection(enforcing, policyDisabled bool) *EndpointPolicyDirection {
	d := &EndpointPolicyDirection{Enforcing: enforcing, State: PolicyNonEnforcing}
	switch {
	case policyDisabled:
		d.Enforcing, d.State = false, PolicyDisabled
	case enforcing:
		d.State = PolicyEnforcing
	}
	return d
}

// CiliumEndpointList is a list of CiliumEndpoints.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`

	Items []CiliumEndpoint `json:"items"`
}
