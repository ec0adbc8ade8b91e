package nodes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Rows are the nodes-table rows of the cluster's CiliumNodes, local
// naming this node. UpdatedAt and RouteStatus are left for the writer.
//
// Two nodes whose pod CIDRs overlap cannot both be routed: a packet to
// the shared addresses would go to whichever route the kernel picks.
// This node keeps its own CIDRs (its pods are there); among the others
// the older CiliumNode keeps them (creation time, then name), so every
// agent refuses the same one, and a node that joins with a taken CIDR
// does not take the traffic of the node that had it.
func Rows(objs []*v2.CiliumNode, local string) []*tables.Node {
	slices.SortFunc(objs, func(a, b *v2.CiliumNode) int {
		if (a.Name == local) != (b.Name == local) {
			if a.Name == local {
				return -1
			}
			return 1
		}
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	type claim struct {
		node string
		cidr netip.Prefix
	}
	var claimed []claim
	var localIPs []netip.Addr
	rows := make([]*tables.Node, 0, len(objs))
	for _, o := range objs {
		row := parse(o)
		row.Local = o.Name == local
		if row.Local {
			localIPs = row.InternalIPs
		}
		switch {
		case row.Refused != "" || row.Local:
		case len(row.InternalIPs) == 0 && len(row.PodCIDRs) > 0:
			row.Refused = "no InternalIP address: its pod CIDRs cannot be routed (set spec.addresses with type InternalIP)"
		case slices.ContainsFunc(row.InternalIPs, func(ip netip.Addr) bool { return slices.Contains(localIPs, ip) }):
			// Two agents on one host (or a copied --node-ip): a route
			// via our own address would loop.
			row.Refused = "its InternalIP is this node's own: not routed; give each node its own address (--node-ip)"
		}
		if row.Refused == "" {
		cidrs:
			for _, p := range row.PodCIDRs {
				for _, c := range claimed {
					if c.cidr.Overlaps(p) {
						row.Refused = fmt.Sprintf("pod CIDR %s overlaps %s of node %s: not routed; give the node a pod CIDR of its own", p, c.cidr, c.node)
						break cidrs
					}
				}
			}
		}
		if row.Refused == "" {
			for _, p := range row.PodCIDRs {
				claimed = append(claimed, claim{o.Name, p})
			}
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b *tables.Node) int { return cmp.Compare(a.Name, b.Name) })
	return rows
}

// parse reads a CiliumNode's addresses and pod CIDRs; what does not parse
// refuses the node, naming the field.
func parse(o *v2.CiliumNode) *tables.Node {
	row := &tables.Node{Name: o.Name}
	var bad []string
	for i, a := range o.Spec.Addresses {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil {
			bad = append(bad, fmt.Sprintf("spec.addresses[%d].ip %q is not an IP address", i, a.IP))
			continue
		}
		ip = ip.Unmap()
		switch {
		case a.Type == v2.NodeInternalIP && !slices.Contains(row.InternalIPs, ip):
			row.InternalIPs = append(row.InternalIPs, ip)
		case a.Type != v2.NodeInternalIP && !slices.Contains(row.OtherIPs, ip):
			row.OtherIPs = append(row.OtherIPs, ip)
		}
	}
	for i, s := range o.Spec.IPAM.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad = append(bad, fmt.Sprintf("spec.ipam.podCIDRs[%d] %q is not a CIDR", i, s))
			continue
		}
		row.PodCIDRs = append(row.PodCIDRs, p.Masked())
	}
	if len(bad) > 0 {
		row.Refused = strings.Join(bad, "; ")
	}
	return row
}

// Spec is the spec of this node's CiliumNode: its InternalIP addresses
// and pod CIDRs.
func Spec(internalIPs []netip.Addr, podCIDRs []netip.Prefix) v2.NodeSpec {
	var s v2.NodeSpec
	for _, ip := range internalIPs {
		s.Addresses = append(s.Addresses, v2.NodeAddress{Type: v2.NodeInternalIP, IP: ip.String()})
	}
	for _, p := range podCIDRs {
		s.IPAM.PodCIDRs = append(s.IPAM.PodCIDRs, p.String())
	}
	return s
}
