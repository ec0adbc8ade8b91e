package ipam

import "context"

// PodCIDRSource gives this node's pod CIDRs with --ipam=kubernetes. The
// k8s-nodes cell provides it from this node's Node object (a cell of
// cells/k8s, which the IPAM does not import: the seam is this interface);
// without Kubernetes mode nothing provides it and --ipam=kubernetes is a
// start error.
type PodCIDRSource interface {
	// PodCIDRs waits, bounded, until the CIDRs are known and returns them
	// (at most one per family) and what names their origin in messages
	// ("spec.podCIDRs of Node x"). The IPAM calls it once, at start,
	// before the API socket opens.
	PodCIDRs(ctx context.Context) (what string, cidrs []string, err error)
}
