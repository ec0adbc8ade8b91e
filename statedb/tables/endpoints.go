package tables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/membrane-net/membrane/labels"
)

// Endpoint is one pod attachment managed by the agent. The endpoint manager
// creates and deletes rows; other cells advance the row through its
// lifecycle (see state.go) by writing the fields they own:
//
//	pod labels, state waiting-for-identity   endpoint manager (labels follow the pods table)
//	Identity, state waiting-to-regenerate    identity allocator
//	state regenerating, ready                regeneration
type Endpoint struct {
	ID uint16 `json:"id"`

	ContainerID     string `json:"container-id"`
	ContainerIfName string `json:"container-interface-name"`
	HostIfName      string `json:"interface-name"`
	HostIfIndex     int    `json:"interface-index"`
	MAC             string `json:"mac,omitempty"`
	HostMAC         string `json:"host-mac,omitempty"`
	Netns           string `json:"netns,omitempty"`
	NetnsCookie     string `json:"netns-cookie,omitempty"`

	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`

	K8sNamespace string `json:"k8s-namespace,omitempty"`
	K8sPodName   string `json:"k8s-pod-name,omitempty"`
	K8sUID       string `json:"k8s-uid,omitempty"`

	// RequestLabels came with the endpoint request or a labels PATCH.
	RequestLabels labels.Labels `json:"request-labels,omitempty"`
	// PodLabels are the pod's labels (k8s: source, plus the namespace label).
	PodLabels labels.Labels `json:"pod-labels,omitempty"`
	// LabelsResolved is false while the endpoint waits for its pod's metadata.
	LabelsResolved bool `json:"labels-resolved"`

	// Identity is 0 until the identity allocator has resolved the labels.
	Identity NumericIdentity `json:"identity"`
	// DatapathIdentity is the identity the endpoint's addresses carry in
	// the datapath (set by regeneration once it is enforced). After a
	// relabel it stays the old identity until peers' policies know the new
	// one and the addresses have switched, so the old identity is not
	// released while packets are still judged by it.
	DatapathIdentity NumericIdentity `json:"datapath-identity,omitempty"`

	State EndpointState `json:"state"`
	// PolicyRevision is the policy revision the datapath enforces, and
	// IngressEnforced/EgressEnforced the directions it enforced when the
	// endpoint last became ready. They are persisted, so a restarted agent
	// puts the same enforcement back before it has recomputed the policy.
	PolicyRevision  uint64 `json:"policy-revision"`
	IngressEnforced bool   `json:"ingress-enforced,omitempty"`
	EgressEnforced  bool   `json:"egress-enforced,omitempty"`

	Created time.Time `json:"created"`
	// Log holds the last status messages, oldest first.
	Log []StatusEntry `json:"log,omitempty"`
}

// Labels are all labels of the endpoint: the pod's, then the request's.
func (e *Endpoint) Labels() labels.Labels { return labels.Merge(e.PodLabels, e.RequestLabels) }

// CNIAttachmentID is "container-id:ifname", unique per attachment.
func (e *Endpoint) CNIAttachmentID() string { return e.ContainerID + ":" + e.ContainerIfName }

// PodName is "namespace/name", or "" for an endpoint without a pod.
func (e *Endpoint) PodName() string {
	if e.K8sPodName == "" {
		return ""
	}
	return e.K8sNamespace + "/" + e.K8sPodName
}

// IPs returns the endpoint's valid addresses.
func (e *Endpoint) IPs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{e.IPv4, e.IPv6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// Clone returns a copy that may be modified (the log is copied on write).
func (e *Endpoint) Clone() *Endpoint {
	e2 := *e
	e2.Log = slices.Clip(e.Log)
	return &e2
}

func (e *Endpoint) TableHeader() []string {
	return []string{"ID", "State", "Identity", "Pod", "Container", "Interface", "IPv4", "IPv6", "PolicyRevision"}
}

func (e *Endpoint) TableRow() []string {
	ip := func(a netip.Addr) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	return []string{
		strconv.Itoa(int(e.ID)), string(e.State), strconv.FormatUint(uint64(e.Identity), 10),
		e.PodName(), e.CNIAttachmentID(), e.HostIfName, ip(e.IPv4), ip(e.IPv6),
		strconv.FormatUint(e.PolicyRevision, 10),
	}
}

// EndpointIDIndex is the primary index.
var EndpointIDIndex = statedb.Index[*Endpoint, uint16]{
	Name:       "id",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.Uint16(e.ID)) },
	FromKey:    index.Uint16,
	FromString: index.Uint16String,
	Unique:     true,
}

// EndpointIPIndex finds the endpoint that holds an address.
var EndpointIPIndex = statedb.Index[*Endpoint, netip.Addr]{
	Name: "ip",
	FromObject: func(e *Endpoint) index.KeySet {
		var keys []index.Key
		for _, a := range e.IPs() {
			keys = append(keys, index.NetIPAddr(a))
		}
		return index.NewKeySet(keys...)
	},
	FromKey:    index.NetIPAddr,
	FromString: index.NetIPAddrString,
	Unique:     true,
}

// EndpointContainerIndex finds the endpoints of a container.
var EndpointContainerIndex = statedb.Index[*Endpoint, string]{
	Name:       "container-id",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.String(e.ContainerID)) },
	FromKey:    index.String,
	FromString: index.FromString,
}

// EndpointCNIAttachmentIndex finds the endpoint of "container-id:ifname".
var EndpointCNIAttachmentIndex = statedb.Index[*Endpoint, string]{
	Name:       "cni-attachment-id",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.String(e.CNIAttachmentID())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// EndpointPodIndex finds the endpoints of "namespace/name".
var EndpointPodIndex = statedb.Index[*Endpoint, string]{
	Name:       "pod-name",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.String(e.PodName())) },
	FromKey:    index.String,
	FromString: index.FromString,
}

// EndpointIdentityIndex finds the endpoints using an identity, as their
// Identity or their DatapathIdentity: an identity's reference count is the
// number of rows it finds.
var EndpointIdentityIndex = statedb.Index[*Endpoint, NumericIdentity]{
	Name: "identity",
	FromObject: func(e *Endpoint) index.KeySet {
		if e.DatapathIdentity != 0 && e.DatapathIdentity != e.Identity {
			return index.NewKeySet(index.Uint32(e.Identity), index.Uint32(e.DatapathIdentity))
		}
		return index.NewKeySet(index.Uint32(e.Identity))
	},
	FromKey:    index.Uint32,
	FromString: index.Uint32String,
}

// EndpointStateIndex finds the endpoints in a state: controllers look for
// the ones waiting for them. Ready endpoints, nearly all of them, are not
// in it: nothing looks them up by state, and each would cost a leaf of
// this index with its watch channel (about 0.2 KiB per endpoint).
var EndpointStateIndex = statedb.Index[*Endpoint, EndpointState]{
	Name: "state",
	FromObject: func(e *Endpoint) index.KeySet {
		if e.State == StateReady {
			return index.NewKeySet()
		}
		return index.NewKeySet(index.String(string(e.State)))
	},
	FromKey:    func(s EndpointState) index.Key { return index.String(string(s)) },
	FromString: index.FromString,
}

func NewEndpointsTable(db *statedb.DB) (statedb.RWTable[*Endpoint], error) {
	return statedb.NewTable(db, "endpoints",
		EndpointIDIndex, EndpointIPIndex, EndpointContainerIndex,
		EndpointCNIAttachmentIndex, EndpointPodIndex, EndpointIdentityIndex, EndpointStateIndex)
}

func (e *Endpoint) String() string {
	return fmt.Sprintf("endpoint %d (%s, %s)", e.ID, e.CNIAttachmentID(), e.State)
}
