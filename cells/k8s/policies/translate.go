package policies

import (
	"encoding/json"
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/policy/api"
)

// Resources the cell watches, as the k8s-status table names them.
const (
	ResourceCNP  = "ciliumnetworkpolicies"
	ResourceCCNP = "ciliumclusterwidenetworkpolicies"
	ResourceNP   = "networkpolicies"
)

// kindOf is the policy kind of each watched resource.
var kindOf = map[string]string{
	ResourceCNP:  api.KindCNP,
	ResourceCCNP: api.KindCCNP,
	ResourceNP:   api.KindNP,
}

// objectRef names the policy object an informer delivers (a tombstone
// included) as the policy repository knows it.
func objectRef(resource string, obj any) (api.ObjectRef, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return api.ObjectRef{}, false
	}
	return api.ObjectRef{Kind: kindOf[resource], Namespace: m.GetNamespace(), Name: m.GetName()}, true
}

// Rules translates a policy object from the API server into the rules
// `membrane policy import` gives for the same manifest (api.Parse, the
// one parser): same rules, namespace and derived labels
// (io.cilium.k8s.policy.derived-from, .name, .namespace, .uid). An error
// is a refusal naming the object and the field.
//
// A CNP's or CCNP's rule bodies reach the parser as the API server
// stores them (raw JSON: the CRD preserves unknown fields), so the
// parser's strict decoding refuses an unknown field, and its validation
// an invalid selector or an L7 section. A NetworkPolicy is a built-in
// type the API server has already pruned and validated; what the parser
// refuses there are the fields Membrane cannot enforce (named ports).
func Rules(obj any) ([]api.ParsedRule, error) {
	switch p := obj.(type) {
	case *v2.CiliumNetworkPolicy:
		return p.Rules()
	case *v2.CiliumClusterwideNetworkPolicy:
		return p.Rules()
	case *networkingv1.NetworkPolicy:
		// Objects from an informer have no kind and apiVersion; the
		// parser needs them, and the cached object must not change.
		np := p.DeepCopy()
		np.APIVersion, np.Kind = networkingv1.SchemeGroupVersion.String(), api.KindNP
		doc, err := json.Marshal(np)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", api.ObjectRef{Kind: api.KindNP, Namespace: p.Namespace, Name: p.Name}, err)
		}
		return api.Parse(doc)
	}
	return nil, fmt.Errorf("%T is not a policy object", obj)
}
