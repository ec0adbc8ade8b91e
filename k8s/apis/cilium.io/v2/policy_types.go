package v2

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CiliumNetworkPolicy is a namespaced policy: one rule in Spec and/or a
// list in Specs, which select endpoints of its namespace only. Rules
// parses them.
//
// The rules are kept as raw JSON, not as Go types: Membrane's policy
// language (policy/api) is their one parser, strict about unknown and
// unsupported fields, and a rule field it does not know must reach it to
// be refused by name rather than vanish on the way (the CRD keeps the
// rule bodies as they were written for the same reason).
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	// Spec is one rule.
	Spec *apiextensionsv1.JSON `json:"spec,omitempty"`

	// Specs is a list of rules.
	Specs []apiextensionsv1.JSON `json:"specs,omitempty"`
}

// CiliumNetworkPolicyList is a list of CiliumNetworkPolicies.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`

	Items []CiliumNetworkPolicy `json:"items"`
}

// CiliumClusterwideNetworkPolicy is a CiliumNetworkPolicy without a
// namespace: its rules select endpoints of every namespace.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	// Spec is one rule.
	Spec *apiextensionsv1.JSON `json:"spec,omitempty"`

	// Specs is a list of rules.
	Specs []apiextensionsv1.JSON `json:"specs,omitempty"`
}

// CiliumClusterwideNetworkPolicyList is a list of
// CiliumClusterwideNetworkPolicies.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumClusterwideNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`

	Items []CiliumClusterwideNetworkPolicy `json:"items"`
}
