package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
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
func parseLabelKey(s string) (source, key string) {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		source, key = s[:i], s[i+1:]
	} else {
		key = s
	}
	if source == labels.SourceAny {
		source = ""
	}
	return source, key
}

// newLabelSelector normalises an endpoint selector. A non-empty namespace
// restricts the selector to that namespace's endpoints (the label
// k8s:io.kubernetes.pod.namespace): always for a rule's own endpoint
// selector (forceNamespace), and for a peer selector unless it names the
// namespace label itself, as Cilium does for CiliumNetworkPolicy rules.
func newLabelSelector(es policyapi.EndpointSelector, namespace string, forceNamespace bool) (*labelSelector, error) {
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
	if namespace != "" {
		named := slices.ContainsFunc(reqs, func(r requirement) bool {
			return r.key == labels.NamespaceKey && (r.source == "" || r.source == labels.SourceK8s)
		})
		if forceNamespace || !named {
			reqs = append(reqs, requirement{source: labels.SourceK8s, key: labels.NamespaceKey, op: opIn, values: []string{namespace}})
		}
	}
	return makeLabelSelector(reqs), nil
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
