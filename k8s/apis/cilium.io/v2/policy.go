package v2

import (
	"encoding/json"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/membrane-net/membrane/policy/api"
)

// Rules parses the policy's rules exactly as `PUT /v1/policy` parses the
// same object (api.Parse): the rules come back validated and in canonical
// form, with the policy's namespace and the labels derived from its
// metadata (derived-from, name, namespace, uid), which is how a later
// version of the object replaces them (api.ObjectRef.Owns). On any
// problem it returns no rules and an *api.Error that names the object and
// each offending field ("CiliumNetworkPolicy \"prod/web\":
// specs[1].egress[0].toFQDNs: ...").
func (p *CiliumNetworkPolicy) Rules() ([]api.ParsedRule, error) {
	return parseRules(KindCiliumNetworkPolicy, &p.ObjectMeta, p.Spec, p.Specs)
}

// Rules parses the policy's rules as CiliumNetworkPolicy.Rules does; they
// have no namespace.
func (p *CiliumClusterwideNetworkPolicy) Rules() ([]api.ParsedRule, error) {
	return parseRules(KindCiliumClusterwideNetworkPolicy, &p.ObjectMeta, p.Spec, p.Specs)
}

// policyDocument is a CNP or CCNP as api.Parse reads it, with the only
// metadata the parser uses.
//
// +k8s:deepcopy-gen=false
type policyDocument struct {
	APIVersion string                 `json:"apiVersion"`
	Kind       string                 `json:"kind"`
	Metadata   policyMetadata         `json:"metadata"`
	Spec       *apiextensionsv1.JSON  `json:"spec,omitempty"`
	Specs      []apiextensionsv1.JSON `json:"specs"` // null when absent, [] when empty: the parser tells them apart
}

// +k8s:deepcopy-gen=false
type policyMetadata struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace,omitempty"`
	UID       types.UID `json:"uid,omitempty"`
}

func parseRules(kind string, meta *metav1.ObjectMeta, spec *apiextensionsv1.JSON, specs []apiextensionsv1.JSON) ([]api.ParsedRule, error) {
	doc, err := json.Marshal(policyDocument{
		APIVersion: SchemeGroupVersion.String(),
		Kind:       kind,
		Metadata:   policyMetadata{Name: meta.Name, Namespace: meta.Namespace, UID: meta.UID},
		Spec:       spec,
		Specs:      specs,
	})
	if err != nil {
		// Only a rule body that is not JSON gets here; one from the API
		// server always is.
		return nil, fmt.Errorf("%s: %w", api.ObjectRef{Kind: kind, Namespace: meta.Namespace, Name: meta.Name}, err)
	}
	return api.Parse(doc)
}
