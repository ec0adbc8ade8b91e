package v2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/membrane-net/membrane/policy/api"
)

// GroupName is Cilium's API group, which Membrane serves its objects under.
const GroupName = "cilium.io"

// SchemeGroupVersion is cilium.io/v2.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v2"}

// Kinds of the group's objects that Membrane knows.
const (
	KindCiliumNetworkPolicy            = api.KindCNP
	KindCiliumClusterwideNetworkPolicy = api.KindCCNP
	KindCiliumEndpoint                 = "CiliumEndpoint"
	KindCiliumIdentity                 = "CiliumIdentity"
	KindCiliumNode                     = "CiliumNode"
)

// Resources: the plural names in API paths; a CRD is named RESOURCE.cilium.io.
const (
	ResourceCiliumNetworkPolicies            = "ciliumnetworkpolicies"
	ResourceCiliumClusterwideNetworkPolicies = "ciliumclusterwidenetworkpolicies"
	ResourceCiliumEndpoints                  = "ciliumendpoints"
	ResourceCiliumIdentities                 = "ciliumidentities"
	ResourceCiliumNodes                      = "ciliumnodes"
)

// Kind qualifies a kind with the group: Kind("CiliumEndpoint").
func Kind(kind string) schema.GroupKind {
	return SchemeGroupVersion.WithKind(kind).GroupKind()
}

// Resource qualifies a resource with the group: Resource("ciliumendpoints").
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

var (
	// SchemeBuilder registers the group's types in a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the group's types (and their lists) to a scheme,
	// for codecs and clients: AddToScheme(scheme.Scheme).
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&CiliumNetworkPolicy{}, &CiliumNetworkPolicyList{},
		&CiliumClusterwideNetworkPolicy{}, &CiliumClusterwideNetworkPolicyList{},
		&CiliumEndpoint{}, &CiliumEndpointList{},
		&CiliumIdentity{}, &CiliumIdentityList{},
		&CiliumNode{}, &CiliumNodeList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
