// Package k8s is the Kubernetes mode of the agent: a group of cells that
// connect to the API server and turn what it holds into the same tables
// the embedded sources write: pods from Pod and Namespace objects
// (pods), the other nodes' pods in the ipcache from their CiliumEndpoints
// (remoteendpoints), policy rules from CiliumNetworkPolicy,
// CiliumClusterwideNetworkPolicy and NetworkPolicy objects (policies,
// through the policy repository, source "k8s"); identities as the mode
// grows; the cluster's nodes from CiliumNode objects (nodes, the nodes
// table). It also publishes what the node does: a CiliumEndpoint per pod
// endpoint (endpoints), this node's CiliumNode (nodes). The rest of the
// agent does not know where a row came from, except that a policy
// rule's Source says it.
//
// The group is off unless --k8s-kubeconfig is given or the agent runs in a
// pod with a service-account token; then the agent behaves exactly as
// without the group. Its cells may import each other (client is the
// group's shared connection); no cell outside the group imports them,
// policies imports the policy repository and nodes the IPAM's flags
// (seams of internal/importrules).
//
// See docs/kubernetes.md.
package k8s

import (
	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	"github.com/membrane-net/membrane/cells/k8s/endpoints"
	"github.com/membrane-net/membrane/cells/k8s/nodes"
	"github.com/membrane-net/membrane/cells/k8s/pods"
	"github.com/membrane-net/membrane/cells/k8s/policies"
	"github.com/membrane-net/membrane/cells/k8s/remoteendpoints"
)

// Cell is the Kubernetes mode's cell group.
var Cell = cell.Group(
	client.Cell,
	crds.Cell,
	pods.Cell,
	policies.Cell,
	endpoints.Cell,
	nodes.Cell,
	remoteendpoints.Cell,
)
