// Package plugin is the work behind membrane-cni, the CNI plugin the
// container runtime (containerd, CRI-O, podman, cnitool) executes once per
// pod attachment. It is step 1 of the endpoint story
// (docs/endpoint-lifecycle.md#1-the-runtime-runs-membrane-cni-add): it asks
// the agent for an address, wires a veth pair between the host and the pod's
// network namespace, and registers the pod as an endpoint with
// sync-build-endpoint, so that when ADD returns the agent has already given
// the pod its identity and datapath state.
//
// The plugin keeps no state of its own. Everything it needs later is derived
// from the attachment (container ID + interface name): the host-side veth
// name (HostVethName), the IPAM owner ("container-id:ifname") and the
// agent's endpoint ID ("cni-attachment-id:CID:IFNAME"). That is what makes
// DEL idempotent and safe without CNI_NETNS, and GC possible without a cache.
//
// The one thing it writes is for the agent: a DEL that cannot reach the
// agent at all removes the host veth, records the DEL in the agent's state
// dir (netconf "stateDir", default /var/lib/membrane; internal/delqueue)
// and succeeds; the agent does it at its next start, before it serves.
// When the queue cannot take it (full, no state dir, the agent is starting
// or stopping) the DEL fails naming the socket, so the runtime retries
// (docs/endpoint-lifecycle.md#deletion-while-the-agent-is-down).
//
// Every command is a function a test can call inside a throwaway network
// namespace (see the tests); main.go only hands them to skel. Try it by hand
// against a running agent:
//
//	ip netns add demo
//	echo '{"cniVersion":"1.1.0","name":"membrane","plugins":[{"type":"membrane-cni"}]}' \
//	    > /tmp/net.d/10-membrane.conflist
//	CNI_PATH=bin NETCONFPATH=/tmp/net.d CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web" \
//	    go tool cnitool add membrane /var/run/netns/demo
//	membrane endpoint list
//	CNI_PATH=bin NETCONFPATH=/tmp/net.d go tool cnitool del membrane /var/run/netns/demo
//
// Imports are kept light on purpose: the binary is exec'd for every pod, so
// startup cost is paid on every ADD and DEL.
package plugin
