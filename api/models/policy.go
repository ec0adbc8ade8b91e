package models

import "encoding/json"

// PolicyImportResponse is the answer of PUT /v1/policy. The body of the
// PUT is a policy document as is (JSON or YAML), not a model.
type PolicyImportResponse struct {
	Revision uint64 `json:"revision"`
	// Rules is how many rules the document held.
	Rules int `json:"rules"`
}

// PolicyRulesResponse is the answer of GET /v1/policy: the policy
// revision and every imported rule, oldest import first.
type PolicyRulesResponse struct {
	Revision uint64        `json:"revision"`
	Rules    []*PolicyRule `json:"rules"`
}

// PolicyRule is one imported rule.
type PolicyRule struct {
	// Key is unique per rule: "<import revision>/<index in the import>".
	Key string `json:"key"`
	// Rule is the rule in Cilium's rule format (the policy language,
	// package policy/api), as the agent encodes it.
	Rule json.RawMessage `json:"rule"`
	// Revision is the policy revision that imported the rule.
	Revision uint64 `json:"revision"`
	// Namespace is set for rules of a CiliumNetworkPolicy: the rule
	// applies to endpoints of that namespace, and its peer selectors are
	// narrowed to it unless they name the namespace or a namespace label.
	Namespace string `json:"namespace,omitempty"`
	// Clusterwide is set for rules of a CiliumClusterwideNetworkPolicy:
	// their peer selectors select only endpoints that have a namespace.
	Clusterwide bool `json:"clusterwide,omitempty"`
	// Source is where the rule came from: "api" (PUT /v1/policy,
	// `membrane policy import`) or "k8s" (a CiliumNetworkPolicy,
	// CiliumClusterwideNetworkPolicy or NetworkPolicy of the cluster).
	Source string `json:"source"`
	// Labels are the rule's labels as "source:key=value" (what
	// DELETE /v1/policy selects by).
	Labels []string `json:"labels,omitempty"`
}

// PolicyDeleteRequest is the optional body of DELETE /v1/policy.
type PolicyDeleteRequest struct {
	// Labels select the rules to delete: those carrying all of them, as
	// "[source:]key[=value]" (no source: any source). Empty: every rule.
	Labels []string `json:"labels,omitempty"`
}

// PolicyDeleteResponse is the answer of DELETE /v1/policy.
type PolicyDeleteResponse struct {
	Revision uint64 `json:"revision"`
	// Deleted is how many rules went.
	Deleted int `json:"deleted"`
}

// PolicyTraceRequest is the body of POST /v1/policy/trace: a flow from an
// endpoint with the source labels to one with the destination labels.
// Labels are "source:key=value" or "key=value" (any source); a single
// "cidr:ADDRESS" stands for an address outside the cluster.
type PolicyTraceRequest struct {
	SrcLabels []string `json:"src-labels"`
	DstLabels []string `json:"dst-labels"`
	// Dport is the destination port (the ICMP type for ICMP).
	Dport uint16 `json:"dport"`
	// Protocol is TCP (default), UDP, SCTP, ICMP, ICMPv6 or a number.
	Protocol string `json:"protocol,omitempty"`
}

// Verdicts of a policy trace and of its stages.
const (
	PolicyVerdictAllowed = "allowed"
	PolicyVerdictDenied  = "denied"
)

// PolicyTraceResponse is the answer of POST /v1/policy/trace: the verdict
// the datapath gives the flow, and why.
type PolicyTraceResponse struct {
	Verdict string `json:"verdict"` // PolicyVerdictAllowed or PolicyVerdictDenied
	// Reason names the enforcement point that decided and what decided
	// there (the rules that allowed or denied the flow, or turned default
	// deny on); for an allowed flow every point that enforces policy, or
	// that none does.
	Reason string `json:"reason"`
	// Rules are the rules that decided the verdict.
	Rules           []PolicyTraceRule `json:"rules"`
	IngressEnforced bool              `json:"ingress-enforced"` // of the destination
	EgressEnforced  bool              `json:"egress-enforced"`  // of the source
	Source          PolicyTracePeer   `json:"source"`
	Destination     PolicyTracePeer   `json:"destination"`
	// Egress is the source's egress policy applied to the flow, Ingress
	// the destination's ingress policy (nil where the peer is not an
	// endpoint: host, world, a CIDR).
	Egress      *PolicyTraceStage `json:"egress,omitempty"`
	Ingress     *PolicyTraceStage `json:"ingress,omitempty"`
	Explanation []string          `json:"explanation"`
}

// PolicyTracePeer is one end of a traced flow.
type PolicyTracePeer struct {
	// Identity is the identity the labels resolved to; 0 if none has
	// these labels (they were matched directly).
	Identity uint32   `json:"identity"`
	Labels   []string `json:"labels"`
}

// PolicyTraceStage is one enforcement point of a traced flow.
type PolicyTraceStage struct {
	Enforced bool   `json:"enforced"`
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason"`
	// Entries are the policy entries the packet matches.
	Entries []PolicyEntry `json:"entries"`
	// Rules are the rules selecting the endpoint.
	Rules []string `json:"rules"`
}

// PolicyTraceRule is a rule that decided a verdict.
type PolicyTraceRule struct {
	Key         string   `json:"key"`
	Description string   `json:"description,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	Labels      []string `json:"labels,omitempty"`
}

// PolicyEntry is one computed allow or deny of an endpoint's policy.
type PolicyEntry struct {
	Key  PolicyKey `json:"key"`
	Deny bool      `json:"deny,omitempty"`
	// RuleKeys name the rules that produced the entry.
	RuleKeys []string `json:"rules,omitempty"`
}

// PolicyKey is what one policy entry matches: a direction (0 ingress,
// 1 egress), a peer identity (0: any peer), a protocol number (0: any)
// and a port range [Port, EndPort] (both 0: all ports; ICMP types are
// the ports of ICMP and ICMPv6).
type PolicyKey struct {
	Direction uint8  `json:"direction"`
	Identity  uint32 `json:"identity"`
	Protocol  uint8  `json:"protocol"`
	Port      uint16 `json:"port"`
	EndPort   uint16 `json:"end-port"`
}
