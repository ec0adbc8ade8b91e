// Package ipam is the agent's IP address management: it gives each pod
// attachment its address (one per configured family) from the node's pod
// CIDR, --pod-cidr (default 10.200.0.0/24) and, for dual stack,
// --pod-cidr-v6. With --ipam=kubernetes the CIDRs are instead spec.podCIDRs
// of this node's Node object: a PodCIDRSource (provided by the k8s-nodes
// cell in Kubernetes mode) gives them at start, and the start hook waits
// for them, bounded, before the API socket opens (docs/multinode.md).
//
// In the endpoint story (docs/endpoint-lifecycle.md) it is the first thing
// that happens, in step 1: membrane-cni
// ADD calls POST /v1/ipam with owner "container-id:ifname" before it
// creates the veth, configures the answer's address in the pod and routes
// through the answer's gateway; it then names that address in the
// endpoint. DEL releases it (DELETE /v1/ipam/{ip}; GET /v1/ipam?owner=X
// finds the leftovers of a half-done ADD).
//
// The first address of each CIDR is the router (the pods' gateway on the
// host side) and is never handed out, nor are the IPv4 network and
// broadcast addresses. Addresses are handed out round-robin, so a released
// one is not reused at once (see pool.allocate for why). Running out is
// ErrExhausted, answered 503 with what to do.
//
// It writes the `ipam` table (IP -> owner, pod, created), the source of
// truth, and mirrors it to ipam.json in --state-dir on every change, under
// one lock, so allocations survive a restart. Until they are restored the
// table is not initialized.
//
// It reclaims the addresses a crash leaked (reclaim.go): an agent killed
// during ADDs leaves addresses allocated to attachments that never got
// their veth or endpoint. ReclaimGrace (10s) after the endpoints table is
// initialized, each allocation restored at start whose attachment has
// neither an endpoint nor a host veth (or whose attachment's endpoint has
// other addresses) is released, logged as "Released leaked pod address"
// with the owner, the IP and why, and counted in the health line
// ipam.reclaim-leaked (`membrane status`). Reads: endpoints (and the
// host's links).
//
// See it work:
//
//	membrane ipam list                  # the allocations
//	membrane statedb ipam               # the raw table rows
//	curl --unix-socket /var/run/membrane/membrane.sock \
//	     -X POST -d '{"owner":"test:eth0"}' http://x/v1/ipam
package ipam
