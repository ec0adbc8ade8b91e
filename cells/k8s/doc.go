// Package k8s is the Kubernetes mode of the agent: a group of cells that
// connect to the API server and turn what it holds into the same tables
// the embedded sources write (pods from Pod and Namespace objects today;
// identities and policies as the mode grows), and publish what the node
// does (a CiliumEndpoint per pod endpoint: package endpoints). The rest
// of the agent does not know where a row came from or that it is
// published.
//
// The group is off unless --k8s-kubeconfig is given or the agent runs in a
// pod with a service-account token; then the agent behaves exactly as
// without the group. Its cells may import each other (client is the
// group's shared connection); no cell outside the group imports them.
//
// See docs/kubernetes.md.
package k8s

import (
	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	"github.com/membrane-net/membrane/cells/k8s/endpoints"
	"github.com/membrane-net/membrane/cells/k8s/pods"
)

// Cell is the Kubernetes mode's cell group.
var Cell = cell.Group(
	client.Cell,
	crds.Cell,
	pods.Cell,
	endpoints.Cell,
)
