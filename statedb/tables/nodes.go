package tables

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// Node is a node of the cluster as its CiliumNode announces it: this
// node's row (Local) and every other node's. k8s-nodes writes every
// column but RouteStatus; node-routes, the reconciler of the routes to
// the node's pod CIDRs, writes RouteStatus. Empty outside Kubernetes mode.
type Node struct {
	// Name is the node's name (the CiliumNode's, the Kubernetes node's).
	Name string `json:"name"`
	// Local marks this agent's own node: never routed, its addresses are
	// the host's.
	Local bool `json:"local,omitempty"`
	// InternalIPs are the node's InternalIP addresses (one per family):
	// the next hop of the routes to its pods.
	InternalIPs []netip.Addr `json:"internal-ips,omitempty"`
	// OtherIPs are its other addresses (ExternalIP, ...).
	OtherIPs []netip.Addr `json:"other-ips,omitempty"`
	// PodCIDRs are the prefixes its pods get their addresses from.
	PodCIDRs []netip.Prefix `json:"pod-cidrs,omitempty"`
	// Refused says why the node's pod CIDRs are not routed (they overlap
	// another node's, an address does not parse, no InternalIP); empty
	// for a node that is routed.
	Refused string `json:"refused,omitempty"`
	// UpdatedAt is when the row last changed (the CiliumNode changed,
	// or its refusal did).
	UpdatedAt time.Time `json:"updated-at"`
	// RouteStatus is the reconciliation of its routes into the kernel.
	RouteStatus reconciler.Status `json:"routes"`
}

func (n *Node) Clone() *Node { n2 := *n; return &n2 }

func (n *Node) GetStatus() reconciler.Status { return n.RouteStatus }
func (n *Node) SetStatus(s reconciler.Status) *Node {
	n.RouteStatus = s
	return n
}

// Routed reports whether this agent routes the node's pod CIDRs: another
// node, not refused, with pod CIDRs.
func (n *Node) Routed() bool {
	return !n.Local && n.Refused == "" && len(n.PodCIDRs) > 0
}

// Addresses are all the node's addresses, InternalIPs first.
func (n *Node) Addresses() []netip.Addr {
	return slices.Concat(n.InternalIPs, n.OtherIPs)
}

// SameSpec reports whether two rows say the same of a node (everything
// but UpdatedAt and RouteStatus).
func (n *Node) SameSpec(o *Node) bool {
	return n.Name == o.Name && n.Local == o.Local && n.Refused == o.Refused &&
		slices.Equal(n.InternalIPs, o.InternalIPs) && slices.Equal(n.OtherIPs, o.OtherIPs) &&
		slices.Equal(n.PodCIDRs, o.PodCIDRs)
}

func (n *Node) TableHeader() []string {
	return []string{"Name", "Local", "Addresses", "PodCIDRs", "Refused", "UpdatedAt", "Routes"}
}

func (n *Node) TableRow() []string {
	local := ""
	if n.Local {
		local = "yes"
	}
	var addrs, cidrs []string
	for _, a := range n.Addresses() {
		addrs = append(addrs, a.String())
	}
	for _, p := range n.PodCIDRs {
		cidrs = append(cidrs, p.String())
	}
	return []string{n.Name, local, strings.Join(addrs, ","), strings.Join(cidrs, ","), n.Refused,
		n.UpdatedAt.UTC().Format(time.RFC3339), n.RouteStatus.String()}
}

// NodeNameIndex is the primary index: the node's name.
var NodeNameIndex = statedb.Index[*Node, string]{
	Name:       "name",
	FromObject: func(n *Node) index.KeySet { return index.NewKeySet(index.String(n.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

func NewNodesTable(db *statedb.DB) (statedb.RWTable[*Node], error) {
	return statedb.NewTable(db, "nodes", NodeNameIndex)
}
