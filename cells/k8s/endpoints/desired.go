package endpoints

import (
	"cmp"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/k8s/pods"
	"github.com/membrane-net/membrane/statedb/tables"
)

// sources are the tables the desired CEPs are derived from.
type sources struct {
	endpoints  statedb.Table[*tables.Endpoint]
	pods       statedb.Table[*tables.Pod]
	identities statedb.Table[*tables.Identity]
}

// desiredRows derives the cilium-endpoints rows from one snapshot: one per
// Kubernetes pod of this node (a pods row of source k8s) that has an
// endpoint serving it. Rows are keyed namespace/name.
func (s sources) desiredRows(txn statedb.ReadTxn) map[string]*tables.CiliumEndpoint {
	chosen := map[string]*tables.Endpoint{}
	pod := map[string]*tables.Pod{}
	for ep := range s.endpoints.All(txn) {
		key := ep.PodName()
		if key == "" {
			continue
		}
		p, ok := pod[key]
		if !ok {
			p, _, _ = s.pods.Get(txn, tables.PodKeyIndex.Query(key))
			pod[key] = p
		}
		if p == nil || !eligible(ep, p) {
			continue
		}
		if prev := chosen[key]; prev == nil || newer(ep, prev) {
			chosen[key] = ep
		}
	}
	out := make(map[string]*tables.CiliumEndpoint, len(chosen))
	for key, ep := range chosen {
		id, _, found := s.identities.Get(txn, tables.IdentityIDIndex.Query(ep.DatapathIdentity))
		if !found {
			continue // not yet restored; the endpoint holds it, so it comes
		}
		out[key] = desiredRow(ep, pod[key], id)
	}
	return out
}

// eligible reports whether ep is an endpoint of pod p the cluster should
// see:
//   - p is a Pod object of this node (source k8s), so it has a UID to own
//     the CEP;
//   - ep belongs to that Pod object, not to an earlier pod of the same name
//     whose sandbox is still being torn down;
//   - the datapath serves ep (its addresses carry an identity): a CEP is
//     created once, when the endpoint first becomes ready, not for each
//     step on the way there;
//   - ep is not being deleted (CNI DEL): its CEP goes now.
func eligible(ep *tables.Endpoint, p *tables.Pod) bool {
	switch {
	case p.Source != pods.Source || p.UID == "":
		return false
	case ep.K8sUID != "" && ep.K8sUID != p.UID:
		return false
	case ep.DatapathIdentity == tables.IdentityUnknown:
		return false
	case ep.State == tables.StateDisconnecting || ep.State == tables.StateDisconnected:
		return false
	}
	return true
}

// newer orders two endpoints of one pod (a second interface, or a sandbox
// replaced by the runtime): the newest one describes the pod.
func newer(a, b *tables.Endpoint) bool {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c > 0
	}
	return cmp.Less(b.ID, a.ID)
}

// desiredRow is the CEP of endpoint ep of pod p, whose datapath identity
// is id. It describes what the datapath enforces, so the transient steps
// of a regeneration or a relabel (the datapath keeps the previous policy
// and identity meanwhile) change nothing the cluster sees: the row
// changes, and the object is written, when the enforced identity, the
// addresses, the enforcement or the serving state change.
func desiredRow(ep *tables.Endpoint, p *tables.Pod, id *tables.Identity) *tables.CiliumEndpoint {
	return &tables.CiliumEndpoint{
		Namespace:        p.Namespace,
		Name:             p.Name,
		PodUID:           p.UID,
		EndpointID:       ep.ID,
		Identity:         id.ID,
		IdentityLabels:   id.Labels.Strings(),
		IPv4:             ep.IPv4,
		IPv6:             ep.IPv6,
		State:            visibleState(ep.State),
		IngressEnforcing: ep.IngressEnforced,
		EgressEnforcing:  ep.EgressEnforced,
	}
}

// visibleState is the state a served endpoint shows: ready, unless its
// last regeneration failed (not-ready) or it is invalid.
func visibleState(s tables.EndpointState) tables.EndpointState {
	switch s {
	case tables.StateNotReady, tables.StateInvalid:
		return s
	}
	return tables.StateReady
}
