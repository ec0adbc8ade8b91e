package tables

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// CiliumEndpoint is the CiliumEndpoint object the agent wants the API
// server to hold for one pod of this node (Kubernetes mode): named like the
// pod, owned by it, with what `kubectl get cep` shows. The k8s-endpoints
// cell derives the rows from the endpoints, pods and identities tables and
// its reconciler writes them to the API server (Status). Every field but
// Status is visible to the cluster: a row changes only when one of them
// does, and each change is one write.
type CiliumEndpoint struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// PodUID is the UID of the Pod object, the CEP's owner.
	PodUID string `json:"pod-uid"`

	EndpointID uint16          `json:"endpoint-id"`
	Identity   NumericIdentity `json:"identity"`
	// IdentityLabels are the identity's security labels, source:key=value,
	// sorted.
	IdentityLabels []string   `json:"identity-labels,omitempty"`
	IPv4           netip.Addr `json:"ipv4,omitzero"`
	IPv6           netip.Addr `json:"ipv6,omitzero"`
	// State is the state the cluster sees: ready while the datapath
	// serves the endpoint (through a regeneration too), else the
	// endpoint's own.
	State            EndpointState `json:"state"`
	IngressEnforcing bool          `json:"ingress-enforcing"`
	EgressEnforcing  bool          `json:"egress-enforcing"`

	Status reconciler.Status `json:"status"`
}

// Key is "namespace/name", the primary key.
func (c *CiliumEndpoint) Key() string { return c.Namespace + "/" + c.Name }

// SameObject reports whether a and b describe the same object, Status
// aside: if so, nothing needs writing.
func (c *CiliumEndpoint) SameObject(o *CiliumEndpoint) bool {
	return c.Namespace == o.Namespace && c.Name == o.Name && c.PodUID == o.PodUID &&
		c.EndpointID == o.EndpointID && c.Identity == o.Identity &&
		slices.Equal(c.IdentityLabels, o.IdentityLabels) &&
		c.IPv4 == o.IPv4 && c.IPv6 == o.IPv6 && c.State == o.State &&
		c.IngressEnforcing == o.IngressEnforcing && c.EgressEnforcing == o.EgressEnforcing
}

func (c *CiliumEndpoint) Clone() *CiliumEndpoint { c2 := *c; return &c2 }

func (c *CiliumEndpoint) GetStatus() reconciler.Status { return c.Status }
func (c *CiliumEndpoint) SetStatus(s reconciler.Status) *CiliumEndpoint {
	c.Status = s
	return c
}

func (c *CiliumEndpoint) TableHeader() []string {
	return []string{"Pod", "Endpoint", "Identity", "State", "IPv4", "IPv6", "Ingress", "Egress", "PodUID", "Status"}
}

func (c *CiliumEndpoint) TableRow() []string {
	ip := func(a netip.Addr) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	return []string{
		c.Key(), strconv.Itoa(int(c.EndpointID)), strconv.FormatUint(uint64(c.Identity), 10),
		string(c.State), ip(c.IPv4), ip(c.IPv6),
		strconv.FormatBool(c.IngressEnforcing), strconv.FormatBool(c.EgressEnforcing),
		c.PodUID, c.Status.String(),
	}
}

// CiliumEndpointKeyIndex is the primary index: "namespace/name".
var CiliumEndpointKeyIndex = statedb.Index[*CiliumEndpoint, string]{
	Name:       "key",
	FromObject: func(c *CiliumEndpoint) index.KeySet { return index.NewKeySet(index.String(c.Key())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

func NewCiliumEndpointsTable(db *statedb.DB) (statedb.RWTable[*CiliumEndpoint], error) {
	return statedb.NewTable(db, "cilium-endpoints", CiliumEndpointKeyIndex)
}
