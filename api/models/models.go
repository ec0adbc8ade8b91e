// Package models holds the JSON documents of the agent's REST API (under /v1
// on the unix socket). Keys are kebab-case like Cilium's models, so tools
// written against Cilium's endpoint API read ours. The same types are used by
// the agent, the CNI plugin and the debug CLI; api/openapi.yaml describes
// them and a test keeps the two in step.
//
// This file has the endpoint, identity, IPAM, pod and agent documents;
// policy.go those of /v1/policy (rules, trace), monitor.go the event
// stream of /v1/monitor. The package imports nothing but the standard
// library: the CNI plugin links it.
package models

import "time"

// Error is the body of every non-2xx answer.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// AddressPair is an endpoint's addresses.
type AddressPair struct {
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
}

// EndpointState is a lifecycle state (Cilium's names).
type EndpointState string

const (
	StateWaitingForIdentity  EndpointState = "waiting-for-identity"
	StateWaitingToRegenerate EndpointState = "waiting-to-regenerate"
	StateRegenerating        EndpointState = "regenerating"
	StateReady               EndpointState = "ready"
	StateDisconnecting       EndpointState = "disconnecting"
	StateDisconnected        EndpointState = "disconnected"
	StateRestoring           EndpointState = "restoring"
	StateInvalid             EndpointState = "invalid"
	StateNotReady            EndpointState = "not-ready"
)

// EndpointChangeRequest is the body of PUT /v1/endpoint/{id}.
type EndpointChangeRequest struct {
	ID                     int64         `json:"id,omitempty"`
	ContainerID            string        `json:"container-id,omitempty"`
	ContainerInterfaceName string        `json:"container-interface-name,omitempty"`
	InterfaceName          string        `json:"interface-name,omitempty"`
	InterfaceIndex         int64         `json:"interface-index,omitempty"`
	Mac                    string        `json:"mac,omitempty"`
	HostMac                string        `json:"host-mac,omitempty"`
	Addressing             *AddressPair  `json:"addressing,omitempty"`
	K8sNamespace           string        `json:"k8s-namespace,omitempty"`
	K8sPodName             string        `json:"k8s-pod-name,omitempty"`
	K8sUID                 string        `json:"k8s-uid,omitempty"`
	Labels                 []string      `json:"labels,omitempty"`
	NetnsCookie            string        `json:"netns-cookie,omitempty"`
	NetworkNamespace       string        `json:"netns,omitempty"`
	SyncBuildEndpoint      bool          `json:"sync-build-endpoint,omitempty"`
	State                  EndpointState `json:"state,omitempty"`
}

// Identity is a numeric security identity and the labels it stands for.
type Identity struct {
	ID     uint32   `json:"id"`
	Labels []string `json:"labels"`
	// Endpoints is how many local endpoints use it (reserved identities: 0).
	Endpoints int `json:"endpoints,omitempty"`
	// Source is where the identity comes from: "reserved" (defined by the
	// agent), "local" (allocated by this agent alone), "cluster" (a
	// CiliumIdentity, shared by every node; Kubernetes mode) or "cidr" (a
	// CIDR policy peer, node-local).
	Source string `json:"source,omitempty"`
}

// StatusEntry is one line of an endpoint's status log.
type StatusEntry struct {
	Timestamp time.Time     `json:"timestamp"`
	State     EndpointState `json:"state"`
	Code      string        `json:"code"` // "ok" or "failure"
	Message   string        `json:"message"`
}

// Endpoint is what the agent knows about one endpoint.
type Endpoint struct {
	ID                     uint16        `json:"id"`
	State                  EndpointState `json:"state"`
	ContainerID            string        `json:"container-id"`
	ContainerInterfaceName string        `json:"container-interface-name"`
	InterfaceName          string        `json:"interface-name"`
	InterfaceIndex         int           `json:"interface-index,omitempty"`
	Mac                    string        `json:"mac,omitempty"`
	HostMac                string        `json:"host-mac,omitempty"`
	NetnsCookie            string        `json:"netns-cookie,omitempty"`
	NetworkNamespace       string        `json:"netns,omitempty"`
	K8sNamespace           string        `json:"k8s-namespace"`
	K8sPodName             string        `json:"k8s-pod-name"`
	K8sUID                 string        `json:"k8s-uid,omitempty"`
	Labels                 []string      `json:"labels"`
	// Identity is null until the endpoint's labels are resolved.
	Identity       *Identity     `json:"identity"`
	Addressing     AddressPair   `json:"addressing"`
	PolicyRevision uint64        `json:"policy-revision"`
	Created        time.Time     `json:"created"`
	Status         []StatusEntry `json:"status,omitempty"`
}

// EndpointBatchDeleteRequest is the body of DELETE /v1/endpoint: every
// endpoint of a container goes.
type EndpointBatchDeleteRequest struct {
	ContainerID string `json:"container-id"`
}

// EndpointBatchDeleteResponse is the answer of DELETE /v1/endpoint.
type EndpointBatchDeleteResponse struct {
	Deleted int `json:"deleted"`
}

// LabelsPatch is the body of PATCH /v1/endpoint/{id}/labels: labels the
// endpoint's request carries in addition to its pod's (e.g. from podman).
type LabelsPatch struct {
	Add    []string `json:"add,omitempty"`
	Delete []string `json:"delete,omitempty"`
}

// EndpointLabels is the answer of GET /v1/endpoint/{id}/labels.
type EndpointLabels struct {
	// Requested are the labels given with the endpoint (PUT or PATCH).
	Requested []string `json:"requested"`
	// Pod are the labels from the pod's metadata.
	Pod []string `json:"pod"`
	// Security are the labels the identity is derived from (after the filter).
	Security []string `json:"security"`
}

// EndpointHealth is the answer of GET /v1/endpoint/{id}/healthz.
type EndpointHealth struct {
	State   EndpointState `json:"state"`
	Healthy bool          `json:"healthy"`
	Message string        `json:"message,omitempty"`
}

// IPAMRequest is the (optional) body of POST /v1/ipam.
type IPAMRequest struct {
	// Owner is recorded with the allocation: the CNI plugin uses the
	// attachment "container-id:ifname", so a DEL can find what to release.
	Owner string `json:"owner,omitempty"`
	// Pod ("namespace/name") is recorded for operators, if known.
	Pod string `json:"pod,omitempty"`
	// Family restricts the answer to "ipv4" or "ipv6"; empty: every configured family.
	Family string `json:"family,omitempty"`
}

// IPAMAddress is one allocated address with what the pod needs to use it.
type IPAMAddress struct {
	IP      string `json:"ip"`
	Prefix  int    `json:"prefix-length"`
	Gateway string `json:"gateway"`
	Cidr    string `json:"cidr"`
}

// IPAMResponse is the answer of POST /v1/ipam.
type IPAMResponse struct {
	IPv4 *IPAMAddress `json:"ipv4,omitempty"`
	IPv6 *IPAMAddress `json:"ipv6,omitempty"`
}

// IPAMAllocation is one row of GET /v1/ipam.
type IPAMAllocation struct {
	IP      string    `json:"ip"`
	Owner   string    `json:"owner"`
	Pod     string    `json:"pod,omitempty"`
	Created time.Time `json:"created"`
}

// Pod is the metadata the agent holds for a pod (PUT /v1/pod/{ns}/{name}).
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Source      string            `json:"source,omitempty"`
}

// Status is the answer of GET /v1/healthz.
type Status struct {
	Version   string            `json:"version"`
	Uptime    string            `json:"uptime"`
	Healthy   bool              `json:"healthy"`
	Endpoints map[string]int    `json:"endpoints"` // by state
	Modules   map[string]string `json:"modules"`   // health of each cell
	Message   string            `json:"message,omitempty"`
	// Kubernetes is the connection to the API server; absent outside
	// Kubernetes mode.
	Kubernetes *KubernetesStatus `json:"kubernetes,omitempty"`
}

// Runtime is the answer of GET /v1/debug/runtime: the agent process's
// resource counts, read from the Go runtime and /proc/self. Counts that
// grow with churn while the number of endpoints does not are a leak.
type Runtime struct {
	Goroutines int `json:"goroutines"`
	// Threads is the process's OS threads (/proc/self/status Threads).
	Threads int `json:"threads"`
	// OpenFDs counts the entries of /proc/self/fd.
	OpenFDs int `json:"openFDs"`
	// RSSBytes is the resident set size (/proc/self/status VmRSS).
	RSSBytes int64 `json:"rssBytes"`
	// HeapBytes is the Go heap in use (runtime/metrics
	// /memory/classes/heap/objects:bytes).
	HeapBytes int64 `json:"heapBytes"`
}

// KubernetesStatus is the agent's connection to the Kubernetes API
// server: whether it answers, and whether each watched resource's cache
// has synced. An unreachable API server does not make the agent
// unhealthy: its pods keep connectivity and policy.
type KubernetesStatus struct {
	// Server is the API server's address and this node's name.
	Server    string `json:"server"`
	Reachable bool   `json:"reachable"`
	// Since is when Reachable last changed.
	Since       time.Time         `json:"since,omitzero"`
	LastError   string            `json:"lastError,omitempty"`
	LastErrorAt time.Time         `json:"lastErrorAt,omitzero"`
	Caches      []KubernetesCache `json:"caches,omitempty"`
}

// KubernetesCache is one watched resource.
type KubernetesCache struct {
	Name        string    `json:"name"`
	Synced      bool      `json:"synced"`
	Detail      string    `json:"detail,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// Events counts the watch events received, the initial list included.
	Events uint64 `json:"events"`
}
