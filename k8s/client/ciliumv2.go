package client

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
)

// Scheme knows the cilium.io/v2 types (and meta/v1 options), for the
// CiliumV2 client's codecs and for informers' list-watch.
var (
	Scheme         = runtime.NewScheme()
	parameterCodec = runtime.NewParameterCodec(Scheme)
)

func init() {
	if err := v2.AddToScheme(Scheme); err != nil {
		panic(err)
	}
}

// CiliumV2 is the typed client of the cilium.io/v2 objects, what
// code-generator's client-gen would produce, built on client-go's generic
// gentype clients instead of generated code.
type CiliumV2 struct {
	rest rest.Interface
}

// NewCiliumV2 builds the client of a REST config.
func NewCiliumV2(rc *rest.Config) (*CiliumV2, error) {
	cfg := rest.CopyConfig(rc)
	cfg.GroupVersion = &v2.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc2, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("cilium.io/v2 client: %w", err)
	}
	return &CiliumV2{rest: rc2}, nil
}

// RESTClient is the underlying REST client.
func (c *CiliumV2) RESTClient() rest.Interface { return c.rest }

// Typed clients of each kind. Namespaced kinds take the namespace ("" for
// all namespaces in List and Watch).
type (
	CiliumEndpointClient                 = gentype.ClientWithList[*v2.CiliumEndpoint, *v2.CiliumEndpointList]
	CiliumIdentityClient                 = gentype.ClientWithList[*v2.CiliumIdentity, *v2.CiliumIdentityList]
	CiliumNodeClient                     = gentype.ClientWithList[*v2.CiliumNode, *v2.CiliumNodeList]
	CiliumNetworkPolicyClient            = gentype.ClientWithList[*v2.CiliumNetworkPolicy, *v2.CiliumNetworkPolicyList]
	CiliumClusterwideNetworkPolicyClient = gentype.ClientWithList[*v2.CiliumClusterwideNetworkPolicy, *v2.CiliumClusterwideNetworkPolicyList]
)

func (c *CiliumV2) CiliumEndpoints(namespace string) *CiliumEndpointClient {
	return gentype.NewClientWithList(v2.ResourceCiliumEndpoints, c.rest, parameterCodec, namespace,
		func() *v2.CiliumEndpoint { return &v2.CiliumEndpoint{} },
		func() *v2.CiliumEndpointList { return &v2.CiliumEndpointList{} })
}

func (c *CiliumV2) CiliumIdentities() *CiliumIdentityClient {
	return gentype.NewClientWithList(v2.ResourceCiliumIdentities, c.rest, parameterCodec, "",
		func() *v2.CiliumIdentity { return &v2.CiliumIdentity{} },
		func() *v2.CiliumIdentityList { return &v2.CiliumIdentityList{} })
}

func (c *CiliumV2) CiliumNodes() *CiliumNodeClient {
	return gentype.NewClientWithList(v2.ResourceCiliumNodes, c.rest, parameterCodec, "",
		func() *v2.CiliumNode { return &v2.CiliumNode{} },
		func() *v2.CiliumNodeList { return &v2.CiliumNodeList{} })
}

func (c *CiliumV2) CiliumNetworkPolicies(namespace string) *CiliumNetworkPolicyClient {
	return gentype.NewClientWithList(v2.ResourceCiliumNetworkPolicies, c.rest, parameterCodec, namespace,
		func() *v2.CiliumNetworkPolicy { return &v2.CiliumNetworkPolicy{} },
		func() *v2.CiliumNetworkPolicyList { return &v2.CiliumNetworkPolicyList{} })
}

func (c *CiliumV2) CiliumClusterwideNetworkPolicies() *CiliumClusterwideNetworkPolicyClient {
	return gentype.NewClientWithList(v2.ResourceCiliumClusterwideNetworkPolicies, c.rest, parameterCodec, "",
		func() *v2.CiliumClusterwideNetworkPolicy { return &v2.CiliumClusterwideNetworkPolicy{} },
		func() *v2.CiliumClusterwideNetworkPolicyList { return &v2.CiliumClusterwideNetworkPolicyList{} })
}
