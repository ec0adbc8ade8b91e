// Package nodes is the cluster's nodes in Kubernetes mode: it keeps this
// node's CiliumNode (named --node-name; spec.addresses InternalIP from
// --node-ip or the address of the interface holding the default route,
// spec.ipam.podCIDRs from --pod-cidr and --pod-cidr-v6, or with
// --ipam=kubernetes from spec.podCIDRs of this node's Node object, which
// it also gives the IPAM: podcidrs.go) and watches every CiliumNode into
// the nodes table, this node's row marked local.
//
// Two nodes whose pod CIDRs overlap are not both routed: the older keeps
// its CIDRs, the other's row is refused (column refused), logged, and a
// Warning event (reason PodCIDROverlap) is recorded on its CiliumNode.
// The same goes for a CiliumNode whose addresses or CIDRs do not parse.
// The node-routes cell turns the rows into kernel routes and ipcache
// entries; this cell knows nothing of the datapath.
//
// The API server unreachable: the informer keeps its cache, the rows
// stay. A CiliumNode deleted: its row goes (this node's own is created
// again). The table's initializer completes once the first list has been
// written, so nothing downstream prunes on an empty table at start.
//
// Reads: the API server (CiliumNodes; this node's Node with
// --ipam=kubernetes). Writes: nodes; this node's
// CiliumNode. Try it: membrane node list; kubectl get ciliumnodes;
// membrane statedb nodes.
package nodes

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells/ipam"
	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Resource is the k8s-status row of the CiliumNode watch.
const Resource = "ciliumnodes"

// Config of the cell.
type Config struct {
	NodeIP []string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.StringSlice("node-ip", def.NodeIP,
		"This node's InternalIP addresses (at most one per family) announced in its CiliumNode, the next hop other nodes route this node's pods through (Kubernetes mode). Default: the addresses of the interface holding the default route")
}

// Cell keeps this node's CiliumNode and the nodes table.
var Cell = cell.Module(
	"k8s-nodes",
	"CiliumNodes of the cluster and this node",
	cell.Config(Config{}),
	cell.ProvidePrivate(newNodePodCIDRs),
	cell.Provide(source),
	cell.Invoke(register),
)

type params struct {
	cell.In

	Clientset  *client.Clientset
	Registered *crds.Registered
	Status     *k8scell.Status
	Jobs       job.Group
	Log        *slog.Logger
	DB         *statedb.DB
	Nodes      statedb.RWTable[*tables.Node]
	Config     Config
	IPAM       ipam.Config
	// FromNode gives the pod CIDRs with --ipam=kubernetes (else nil).
	FromNode *nodePodCIDRs
}

func register(p params) error {
	if !p.Clientset.IsEnabled() {
		return nil
	}
	nodeIPs, err := parseNodeIPs(p.Config.NodeIP)
	if err != nil {
		return err
	}
	var podCIDRs []netip.Prefix
	if p.FromNode == nil {
		if podCIDRs, err = podCIDRsOf(p.IPAM); err != nil {
			return err
		}
	}
	wtxn := p.DB.WriteTxn(p.Nodes)
	initDone := p.Nodes.RegisterInitializer(wtxn, "k8s-nodes")
	wtxn.Commit()

	w := &watcher{
		cs: p.Clientset, registered: p.Registered, status: p.Status, log: p.Log, db: p.DB, nodes: p.Nodes,
		initDone: initDone, refused: map[string]string{}, kick: make(chan struct{}, 1),
	}
	a := &announcer{cs: p.Clientset, registered: p.Registered, status: p.Status, log: p.Log,
		nodeIPs: nodeIPs, podCIDRs: podCIDRs, fromNode: p.FromNode, kick: w.kick}
	p.Jobs.Add(job.OneShot("watch-ciliumnodes", w.run))
	p.Jobs.Add(job.OneShot("announce-ciliumnode", a.run))
	return nil
}

// parseNodeIPs validates --node-ip: addresses, at most one per family.
func parseNodeIPs(ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	var v4, v6 bool
	for _, s := range ss {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--node-ip=%q is not an IP address (want e.g. 192.168.1.10 or 192.168.1.10,fd00::10)", s)
		}
		ip = ip.Unmap()
		if ip.Is4() && v4 || ip.Is6() && v6 {
			return nil, fmt.Errorf("--node-ip: two addresses of one family (%s); give at most one IPv4 and one IPv6 address", strings.Join(ss, ","))
		}
		v4, v6 = v4 || ip.Is4(), v6 || ip.Is6()
		out = append(out, ip)
	}
	return out, nil
}

// podCIDRsOf are this node's pod CIDRs, from the IPAM's flags (which the
// IPAM cell validates; a bad value stops the agent there).
func podCIDRsOf(c ipam.Config) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range []string{c.PodCIDR, c.PodCIDRV6} {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("pod CIDR %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
