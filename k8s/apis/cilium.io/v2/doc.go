// Package v2 is Membrane's own Go model of the Kubernetes API group
// cilium.io, version v2: the objects a Membrane agent reads and writes in
// Kubernetes mode, under the group, kinds, resource names and JSON field
// names Cilium uses, so that manifests, CRD names and kubectl habits carry
// over unchanged (`kubectl get cep`, `kubectl apply -f cnp.yaml`).
//
//   - CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy: rules, read by the
//     agent. The rule bodies stay raw JSON and are parsed by Membrane's
//     policy language (policy/api), which enforces L3/L4 and refuses, by
//     name, every field it does not enforce: Rules does that.
//   - CiliumEndpoint: one per pod endpoint, written by the agent (status
//     only: ID, identity, addresses, state, policy enforcement).
//   - CiliumIdentity: one per security identity, written by the agent; the
//     name is the numeric identity (NewCiliumIdentity).
//   - CiliumNode: the node's addresses and pod CIDRs.
//
// The types declare only the fields Membrane uses; each has the JSON name
// and shape of Cilium's field, so an object Membrane writes is valid under
// Cilium's CRDs as well as under Membrane's own (install/kubernetes/crds,
// whose tests check the two agree field by field).
//
// Layout: k8s/apis/GROUP/VERSION is the Kubernetes code generators'
// convention (one package per group version, the group in the import
// path), so a clientset or informers can be generated beside it later. It
// is not a cell and not the agent's REST contract (api/): it imports only
// the domain libraries (policy/api, labels) and k8s.io/apimachinery, never
// cells/ or statedb/, and the CNI plugin and the CLI never import it, so
// they do not link the Kubernetes libraries (internal/importrules checks
// both).
//
// zz_generated.deepcopy.go is generated (go generate; `make deepcopy-check`
// fails when it is stale). Objects from an informer's cache are shared:
// DeepCopy before changing one.
//
// +k8s:deepcopy-gen=package
// +groupName=cilium.io
package v2

//go:generate go tool deepcopy-gen --output-file zz_generated.deepcopy.go .
