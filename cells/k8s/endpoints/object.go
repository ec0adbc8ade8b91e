package endpoints

import (
	"maps"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/statedb/tables"
)

// NodeLabel is the label the agent puts on the CEPs it writes, valued with
// its node's name: `kubectl get cep -A -l membrane.io/node=NODE` lists a
// node's endpoints, and the agent finds its own (to prune those no local
// endpoint explains) with one list by this label.
const NodeLabel = "membrane.io/node"

// object is the CiliumEndpoint of a row on node: named like the pod, in
// its namespace, owned by the Pod (so the garbage collector deletes it
// with the pod if the agent cannot), with the status `kubectl get cep`
// shows.
func object(row *tables.CiliumEndpoint, node string) *v2.CiliumEndpoint {
	pair := v2.AddressPair{}
	if row.IPv4.IsValid() {
		pair.IPv4 = row.IPv4.String()
	}
	if row.IPv6.IsValid() {
		pair.IPv6 = row.IPv6.String()
	}
	return &v2.CiliumEndpoint{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: row.Namespace,
			Name:      row.Name,
			Labels:    map[string]string{NodeLabel: node},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: row.Name, UID: types.UID(row.PodUID),
			}},
		},
		Status: v2.EndpointStatus{
			ID: int64(row.EndpointID),
			Identity: &v2.EndpointIdentity{
				ID: int64(row.Identity), Labels: row.IdentityLabels,
			},
			Networking: &v2.EndpointNetworking{
				Addressing: []v2.AddressPair{pair},
				NodeIP:     node,
			},
			State: string(row.State),
			Policy: &v2.EndpointPolicy{
				Ingress: v2.NewEndpointPolicyDirection(row.IngressEnforcing, false),
				Egress:  v2.NewEndpointPolicyDirection(row.EgressEnforcing, false),
			},
		},
	}
}

// upToDate reports whether the object the API server has (have) already
// says what want says: the node label, the owner and the status. Other
// labels, annotations or owners someone added are left alone.
func upToDate(have, want *v2.CiliumEndpoint) bool {
	return have.Labels[NodeLabel] == want.Labels[NodeLabel] &&
		ownerUID(have) == ownerUID(want) &&
		reflect.DeepEqual(normalize(have.Status), normalize(want.Status))
}

// merge returns have with want's node label, owner and status: the
// object to write in an update (have's resourceVersion makes the update
// conditional on nobody having written since).
func merge(have, want *v2.CiliumEndpoint) *v2.CiliumEndpoint {
	out := have.DeepCopy()
	out.Labels = maps.Clone(out.Labels)
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[NodeLabel] = want.Labels[NodeLabel]
	owners := []metav1.OwnerReference{want.OwnerReferences[0]}
	for _, o := range have.OwnerReferences {
		if !isPodOwner(o) {
			owners = append(owners, o)
		}
	}
	out.OwnerReferences = owners
	out.Status = *want.Status.DeepCopy()
	return out
}

func isPodOwner(o metav1.OwnerReference) bool {
	return o.Kind == "Pod" && o.APIVersion == "v1"
}

// ownerUID is the UID of the object's Pod owner, "" if none.
func ownerUID(o *v2.CiliumEndpoint) types.UID {
	for _, r := range o.OwnerReferences {
		if isPodOwner(r) {
			return r.UID
		}
	}
	return ""
}

// normalize makes a status read back from the API server comparable with
// one built here: empty lists and nil are the same.
func normalize(s v2.EndpointStatus) v2.EndpointStatus {
	s = *s.DeepCopy()
	if s.Identity != nil && len(s.Identity.Labels) == 0 {
		s.Identity.Labels = nil
	}
	return s
}
