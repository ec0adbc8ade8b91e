package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// identitySelector selects identities: a label selector (fromEndpoints,
// toEndpoints), an entity (fromEntities) or a CIDR (fromCIDR, CIDRSet).
// Its key is canonical: two selectors with the same key select the same
// identities, so the selector cache holds one entry for both.
type identitySelector interface {
	key() string
	matches(*identityInfo) bool
}

// Label selector operators (Kubernetes' matchExpressions).
const (
	opIn           = "In"
	opNotIn        = "NotIn"
	opExists       = "Exists"
	opDoesNotExist = "DoesNotExist"
)

// requirement is one normalised term of a label selector. An empty
// source matches labels of any source.
type requirement struct {
	source string
	key    string
	op     string
	values []string // sorted, distinct; In and NotIn only
}

func (r requirement) String() string {
	k := r.key
	if r.source != "" {
		k = r.source + ":" + r.key
	} else {
		k = labels.SourceAny + ":" + r.key
	}
	switch r.op {
	case opExists, opDoesNotExist:
		return k + " " + r.op
	}
	return k + " " + r.op + " (" + strings.Join(r.values, ",") + ")"
}

// matches reports whether the labels satisfy the requirement. Labels of
// source "any" (given by an operator to `policy trace`) match a
// requirement of any source.
func (r requirement) matches(ls labels.Labels) bool {
	found, valueIn := false, false
	for _, l := range ls {
		if l.Key != r.key || (r.source != "" && l.Source != r.source && l.Source != labels.SourceAny) {
			continue
		}
		found = true
		if _, ok := slices.BinarySearch(r.values, l.Value); ok {
			valueIn = true
		}
	}
	switch r.op {
	case opIn:
		return valueIn
	case opNotIn:
		return !valueIn
	case opExists:
		return found
	case opDoesNotExist:
		return !found
	}
	return false
}

// labelSelector is a normalised endpoint selector: matchLabels and
// matchExpressions as one sorted list of requirements, all of which must
// hold. Its key is the list written out.
type labelSelector struct {
	reqs []requirement
	k    string
}

// parseLabelKey splits a selector key "source:key" ("k8s:app"); a key
// without a source, or with source "any", matches labels of any source.
// As in Cilium, a key without ':' that begins with "reserved." names a
// reserved label ("reserved.init" is reserved:init).
func parseLabelKey(s string) (source, key string) {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		source, key = s[:i], s[i+1:]
	} else if k, ok := strings.CutPrefix(s, labels.SourceReserved+"."); ok {
		source, key = labels.SourceReserved, k
	} else {
		key = s
	}
	if source == labels.SourceAny {
		source = ""
	}
	return source, key
}

// Label keys that scope selectors (Cilium's translation of namespaced and
// clusterwide policies looks for them).
const (
	// namespaceLabelsPrefix begins the keys of the labels a pod's endpoint
	// carries for its namespace's labels
	// (io.cilium.k8s.namespace.labels.KEY=VALUE).
	namespaceLabelsPrefix = "io.cilium.k8s.namespace.labels."
	// initKey is the reserved label of endpoints whose identity is not
	// known yet (reserved:init).
	initKey = "init"
)

// ruleScope is what a rule's origin says about the endpoints its
// selectors may select: a CiliumNetworkPolicy has a namespace, a
// CiliumClusterwideNetworkPolicy is clusterwide, a plain rule neither.
type ruleScope struct {
	namespace   string
	clusterwide bool
}

func scopeOf(row *tables.PolicyRule) ruleScope {
	return ruleScope{namespace: row.Namespace, clusterwide: row.Clusterwide && row.Namespace == ""}
}

// newSubjectSelector is a rule's endpointSelector. A namespaced rule
// applies only to endpoints of its namespace: as in Cilium, the
// namespace replaces a k8s:io.kubernetes.pod.namespace of matchLabels
// (a rule cannot reach into another namespace) and is added otherwise.
// Clusterwide and plain rules select by the selector as written.
func newSubjectSelector(es policyapi.EndpointSelector, scope ruleScope) (*labelSelector, error) {
	if scope.namespace != "" && len(es.MatchLabels) > 0 {
		ml := make(map[string]string, len(es.MatchLabels))
		for k, v := range es.MatchLabels {
			if src, key := parseLabelKey(k); src != labels.SourceK8s || key != labels.NamespaceKey {
				ml[k] = v
			}
		}
		es.MatchLabels = ml
	}
	reqs, err := requirementsOf(es)
	if err != nil {
		return nil, err
	}
	if scope.namespace != "" {
		reqs = append(reqs, namespaceIs(scope.namespace))
	}
	return makeLabelSelector(reqs), nil
}

// newPeerSelector is a fromEndpoints/toEndpoints selector of a rule,
// scoped as Cilium translates the peers of a CiliumNetworkPolicy and a
// CiliumClusterwideNetworkPolicy (allow and deny sections alike):
//
//   - a selector that names a reserved label (reserved:host) is used as
//     written, and so is one that names the namespace label
//     io.kubernetes.pod.namespace (of source k8s or any);
//   - otherwise, in a namespaced rule, a selector that names no
//     namespace label (io.cilium.k8s.namespace.labels.*, of source k8s
//     or any) selects only endpoints of the rule's namespace; one that
//     names a namespace label selects in every namespace;
//   - otherwise, in a clusterwide rule, the selector selects only
//     endpoints that have a namespace (k8s:io.kubernetes.pod.namespace
//     exists), so {} means every pod, not every identity; except in a
//     rule whose endpointSelector names reserved:init (subjectInit):
//     its peers are used as written.
//
// Plain rules use their peer selectors as written.
func newPeerSelector(es policyapi.EndpointSelector, scope ruleScope, subjectInit bool) (*labelSelector, error) {
	reqs, err := requirementsOf(es)
	if err != nil {
		return nil, err
	}
	names := func(match func(requirement) bool) bool { return slices.ContainsFunc(reqs, match) }
	k8sOrAny := func(r requirement) bool { return r.source == "" || r.source == labels.SourceK8s }
	switch {
	case names(func(r requirement) bool { return r.source == labels.SourceReserved }):
	case names(func(r requirement) bool { return k8sOrAny(r) && r.key == labels.NamespaceKey }):
	case scope.namespace != "":
		if !names(func(r requirement) bool { return k8sOrAny(r) && strings.HasPrefix(r.key, namespaceLabelsPrefix) }) {
			reqs = append(reqs, namespaceIs(scope.namespace))
		}
	case scope.clusterwide:
		if !subjectInit {
			reqs = append(reqs, requirement{source: labels.SourceK8s, key: labels.NamespaceKey, op: opExists})
		}
	}
	return makeLabelSelector(reqs), nil
}

// namesInit reports whether an endpoint selector names the reserved
// label init, in matchLabels or matchExpressions: Cilium then keeps a
// clusterwide rule's peers unscoped.
func namesInit(es *policyapi.EndpointSelector) bool {
	if es == nil {
		return false
	}
	isInit := func(k string) bool {
		src, key := parseLabelKey(k)
		return src == labels.SourceReserved && key == initKey
	}
	return slices.ContainsFunc(slices.Collect(maps.Keys(es.MatchLabels)), isInit) ||
		slices.ContainsFunc(es.MatchExpressions, func(e policyapi.LabelSelectorRequirement) bool { return isInit(e.Key) })
}

func namespaceIs(ns string) requirement {
	return requirement{source: labels.SourceK8s, key: labels.NamespaceKey, op: opIn, values: []string{ns}}
}

// requirementsOf normalises matchLabels and matchExpressions into one
// list of requirements.
func requirementsOf(es policyapi.EndpointSelector) ([]requirement, error) {
	var reqs []requirement
	for _, k := range slices.Sorted(maps.Keys(es.MatchLabels)) {
		source, key := parseLabelKey(k)
		if key == "" {
			return nil, fmt.Errorf("matchLabels: empty key in %q", k)
		}
		reqs = append(reqs, requirement{source: source, key: key, op: opIn, values: []string{es.MatchLabels[k]}})
	}
	for i, e := range es.MatchExpressions {
		source, key := parseLabelKey(e.Key)
		if key == "" {
			return nil, fmt.Errorf("matchExpressions[%d]: empty key", i)
		}
		r := requirement{source: source, key: key, op: e.Operator}
		switch e.Operator {
		case opIn, opNotIn:
			if len(e.Values) == 0 {
				return nil, fmt.Errorf("matchExpressions[%d] (%s): operator %s needs values", i, e.Key, e.Operator)
			}
			r.values = slices.Compact(slices.Sorted(slices.Values(e.Values)))
		case opExists, opDoesNotExist:
			if len(e.Values) != 0 {
				return nil, fmt.Errorf("matchExpressions[%d] (%s): operator %s takes no values", i, e.Key, e.Operator)
			}
		default:
			return nil, fmt.Errorf("matchExpressions[%d] (%s): unknown operator %q (want In, NotIn, Exists or DoesNotExist)", i, e.Key, e.Operator)
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

func makeLabelSelector(reqs []requirement) *labelSelector {
	slices.SortFunc(reqs, func(a, b requirement) int {
		return strings.Compare(a.String(), b.String())
	})
	reqs = slices.CompactFunc(reqs, func(a, b requirement) bool { return a.String() == b.String() })
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = r.String()
	}
	return &labelSelector{reqs: reqs, k: "labels:{" + strings.Join(parts, ", ") + "}"}
}

func (s *labelSelector) key() string    { return s.k }
func (s *labelSelector) String() string { return s.k }

// isEmpty reports whether the selector has no requirement at all.
func (s *labelSelector) isEmpty() bool { return len(s.reqs) == 0 }

// matchesLabels reports whether every requirement holds for ls. The
// empty selector matches any labels: as a rule's endpoint selector it
// selects every endpoint.
func (s *labelSelector) matchesLabels(ls labels.Labels) bool {
	for _, r := range s.reqs {
		if !r.matches(ls) {
			return false
		}
	}
	return true
}

// matches is the selector as a peer (fromEndpoints/toEndpoints): it
// selects cluster identities, and reserved identities whose labels match
// (`reserved:host`), never CIDR identities (fromCIDR selects those). The
// empty selector {} selects every cluster identity and no reserved one.
func (s *labelSelector) matches(id *identityInfo) bool {
	switch id.kind {
	case kindCIDR:
		return false
	case kindReserved:
		if s.isEmpty() {
			return false
		}
	}
	return s.matchesLabels(id.labels)
}
