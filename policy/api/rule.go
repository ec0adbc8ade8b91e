// Package api is Membrane's policy language: Cilium's L3/L4 rule format
// (the same JSON/YAML documents, also wrapped as CiliumNetworkPolicy or
// CiliumClusterwideNetworkPolicy objects), so existing policies import
// unchanged where they stay inside L3/L4. Kubernetes NetworkPolicy objects
// are translated into the same rules (netpol.go).
//
// Every field Cilium's rule has is declared here. Fields Membrane does not
// enforce are declared as Unsupported so that a document using them is
// refused with an error naming the field, never silently weakened.
package api

import "encoding/json"

// Unsupported holds a field Membrane recognises but does not implement.
// Its presence in a document is an error that names the field.
type Unsupported = json.RawMessage

// Rule is one policy rule.
type Rule struct {
	EndpointSelector *EndpointSelector `json:"endpointSelector,omitempty"`
	NodeSelector     *EndpointSelector `json:"nodeSelector,omitempty"`

	Ingress     []IngressRule     `json:"ingress,omitempty"`
	IngressDeny []IngressDenyRule `json:"ingressDeny,omitempty"`
	Egress      []EgressRule      `json:"egress,omitempty"`
	EgressDeny  []EgressDenyRule  `json:"egressDeny,omitempty"`

	// Labels identify the rule (for DELETE and tracing).
	Labels      LabelArray `json:"labels,omitempty"`
	Description string     `json:"description,omitempty"`

	EnableDefaultDeny *DefaultDenyConfig `json:"enableDefaultDeny,omitempty"`

	Log Unsupported `json:"log,omitempty"`
}

// DefaultDenyConfig says whether a rule turns on default deny for the
// endpoints it selects (Cilium: true unless set to false).
type DefaultDenyConfig struct {
	Ingress *bool `json:"ingress,omitempty"`
	Egress  *bool `json:"egress,omitempty"`
}

// EndpointSelector is a Kubernetes label selector. Keys may carry a
// source ("k8s:app"); a key without one matches labels of any source.
type EndpointSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one matchExpressions entry.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"` // In, NotIn, Exists, DoesNotExist
	Values   []string `json:"values,omitempty"`
}

// Entity names a reserved class of peers.
type Entity string

// Entities Membrane knows.
const (
	EntityAll           Entity = "all"
	EntityWorld         Entity = "world"
	EntityWorldIPv4     Entity = "world-ipv4"
	EntityWorldIPv6     Entity = "world-ipv6"
	EntityCluster       Entity = "cluster"
	EntityHost          Entity = "host"
	EntityRemoteNode    Entity = "remote-node"
	EntityInit          Entity = "init"
	EntityHealth        Entity = "health"
	EntityUnmanaged     Entity = "unmanaged"
	EntityKubeAPIServer Entity = "kube-apiserver"
	EntityIngress       Entity = "ingress"
)

// CIDRRule is a CIDR with exceptions.
type CIDRRule struct {
	Cidr              string      `json:"cidr,omitempty"`
	Except            []string    `json:"except,omitempty"`
	CIDRGroupRef      Unsupported `json:"cidrGroupRef,omitempty"`
	CIDRGroupSelector Unsupported `json:"cidrGroupSelector,omitempty"`
}

// PortProtocol is one port (number or IANA name) or range, and protocol.
type PortProtocol struct {
	Port     string `json:"port,omitempty"`
	EndPort  int32  `json:"endPort,omitempty"`
	Protocol string `json:"protocol,omitempty"` // TCP, UDP, SCTP, ANY (default ANY)
}

// PortRule is one toPorts entry.
type PortRule struct {
	Ports          []PortProtocol `json:"ports,omitempty"`
	Rules          Unsupported    `json:"rules,omitempty"` // L7 (http, dns, kafka)
	TerminatingTLS Unsupported    `json:"terminatingTLS,omitempty"`
	OriginatingTLS Unsupported    `json:"originatingTLS,omitempty"`
	ServerNames    Unsupported    `json:"serverNames,omitempty"`
	Listener       Unsupported    `json:"listener,omitempty"`
}

// ICMPRule is one icmps entry.
type ICMPRule struct {
	Fields []ICMPField `json:"fields,omitempty"`
}

// ICMPField is an ICMP type (number or name) of a family.
type ICMPField struct {
	Family string          `json:"family,omitempty"` // IPv4 (default) or IPv6
	Type   json.RawMessage `json:"type"`             // number or name, e.g. 8 or "EchoRequest"
}

// IngressRule allows traffic into the selected endpoints.
type IngressRule struct {
	FromEndpoints []EndpointSelector `json:"fromEndpoints,omitempty"`
	FromEntities  []Entity           `json:"fromEntities,omitempty"`
	FromCIDR      []string           `json:"fromCIDR,omitempty"`
	FromCIDRSet   []CIDRRule         `json:"fromCIDRSet,omitempty"`
	ToPorts       []PortRule         `json:"toPorts,omitempty"`
	ICMPs         []ICMPRule         `json:"icmps,omitempty"`

	FromRequires   Unsupported `json:"fromRequires,omitempty"`
	FromGroups     Unsupported `json:"fromGroups,omitempty"`
	FromNodes      Unsupported `json:"fromNodes,omitempty"`
	Authentication Unsupported `json:"authentication,omitempty"`
	// Auth is authentication's spelling before Cilium 1.15.
	Auth Unsupported `json:"auth,omitempty"`
}

// IngressDenyRule denies traffic into the selected endpoints.
type IngressDenyRule struct {
	FromEndpoints []EndpointSelector `json:"fromEndpoints,omitempty"`
	FromEntities  []Entity           `json:"fromEntities,omitempty"`
	FromCIDR      []string           `json:"fromCIDR,omitempty"`
	FromCIDRSet   []CIDRRule         `json:"fromCIDRSet,omitempty"`
	ToPorts       []PortRule         `json:"toPorts,omitempty"`
	ICMPs         []ICMPRule         `json:"icmps,omitempty"`

	FromRequires Unsupported `json:"fromRequires,omitempty"`
	FromGroups   Unsupported `json:"fromGroups,omitempty"`
	FromNodes    Unsupported `json:"fromNodes,omitempty"`
}

// EgressRule allows traffic out of the selected endpoints.
type EgressRule struct {
	ToEndpoints []EndpointSelector `json:"toEndpoints,omitempty"`
	ToEntities  []Entity           `json:"toEntities,omitempty"`
	ToCIDR      []string           `json:"toCIDR,omitempty"`
	ToCIDRSet   []CIDRRule         `json:"toCIDRSet,omitempty"`
	ToPorts     []PortRule         `json:"toPorts,omitempty"`
	ICMPs       []ICMPRule         `json:"icmps,omitempty"`

	ToRequires     Unsupported `json:"toRequires,omitempty"`
	ToServices     Unsupported `json:"toServices,omitempty"`
	ToFQDNs        Unsupported `json:"toFQDNs,omitempty"`
	ToGroups       Unsupported `json:"toGroups,omitempty"`
	ToNodes        Unsupported `json:"toNodes,omitempty"`
	Authentication Unsupported `json:"authentication,omitempty"`
	// Auth is authentication's spelling before Cilium 1.15.
	Auth Unsupported `json:"auth,omitempty"`
}

// EgressDenyRule denies traffic out of the selected endpoints.
type EgressDenyRule struct {
	ToEndpoints []EndpointSelector `json:"toEndpoints,omitempty"`
	ToEntities  []Entity           `json:"toEntities,omitempty"`
	ToCIDR      []string           `json:"toCIDR,omitempty"`
	ToCIDRSet   []CIDRRule         `json:"toCIDRSet,omitempty"`
	ToPorts     []PortRule         `json:"toPorts,omitempty"`
	ICMPs       []ICMPRule         `json:"icmps,omitempty"`

	ToRequires Unsupported `json:"toRequires,omitempty"`
	ToServices Unsupported `json:"toServices,omitempty"`
	ToGroups   Unsupported `json:"toGroups,omitempty"`
	ToNodes    Unsupported `json:"toNodes,omitempty"`
}

// LabelArray identifies a rule: Cilium writes it as objects
// ({key, value, source}); "source:key=value" strings are accepted too.
type LabelArray []RuleLabel

// RuleLabel is one label of a rule.
type RuleLabel struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Source string `json:"source,omitempty"`
}
