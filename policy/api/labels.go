package api

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/membrane-net/membrane/labels"
)

// Rule labels name rules, so that they can be listed, traced and deleted
// (DELETE /v1/policy {"labels": [...]}). Their canonical form is the
// string "source:key=value".
const (
	// LabelSourceUnspec is the source of a rule label written without one,
	// as in Cilium.
	LabelSourceUnspec = "unspec"
	// LabelSourceK8s is the source of the labels derived from a
	// CiliumNetworkPolicy's metadata.
	LabelSourceK8s = labels.SourceK8s

	// The labels Cilium derives from a CiliumNetworkPolicy or
	// CiliumClusterwideNetworkPolicy (source k8s): the object's kind, name,
	// namespace (CNP only) and uid (when the document has one).
	PolicyLabelDerivedFrom = "io.cilium.k8s.policy.derived-from"
	PolicyLabelName        = "io.cilium.k8s.policy.name"
	PolicyLabelNamespace   = "io.cilium.k8s.policy.namespace"
	PolicyLabelUID         = "io.cilium.k8s.policy.uid"
)

// maxLabelValue bounds a rule label's value: a Kubernetes object name
// (up to 253 characters) must fit.
const maxLabelValue = 253

// ParseRuleLabel reads "[source:]key[=value]". The source is what precedes
// the first ':' that comes before any '='; without one, Source is empty
// (a rule label then gets LabelSourceUnspec; in DELETE it matches any
// source). The label is validated.
func ParseRuleLabel(s string) (RuleLabel, error) {
	var l RuleLabel
	s = strings.TrimSpace(s)
	if s == "" {
		return l, errors.New("empty label")
	}
	kv := s
	eq := strings.IndexByte(s, '=')
	if i := strings.IndexByte(s, ':'); i >= 0 && (eq < 0 || i < eq) {
		l.Source, kv = s[:i], s[i+1:]
		if l.Source == "" {
			return l, fmt.Errorf("label %q: empty source before ':'", s)
		}
	}
	l.Key, l.Value, _ = strings.Cut(kv, "=")
	return l, l.validate()
}

// String is the canonical "source:key=value" ("source:key" without a
// value); a label without a source is written with LabelSourceUnspec.
func (l RuleLabel) String() string {
	src := l.Source
	if src == "" {
		src = LabelSourceUnspec
	}
	if l.Value == "" {
		return src + ":" + l.Key
	}
	return src + ":" + l.Key + "=" + l.Value
}

// validate checks the source and key as identity labels are checked; the
// value is free text without control characters (rule labels are names,
// not selectors), at most 253 bytes.
func (l RuleLabel) validate() error {
	if l.Key == "" {
		return fmt.Errorf("label %q: empty key", l.String())
	}
	src := l.Source
	if src == "" {
		src = LabelSourceUnspec
	}
	if err := (labels.Label{Source: src, Key: l.Key}).Validate(); err != nil {
		return err
	}
	switch {
	case len(l.Value) > maxLabelValue:
		return fmt.Errorf("label %q: value longer than %d bytes", l.Key, maxLabelValue)
	case !utf8.ValidString(l.Value):
		return fmt.Errorf("label %q: value is not valid UTF-8", l.Key)
	case strings.IndexFunc(l.Value, unicode.IsControl) >= 0:
		return fmt.Errorf("label %q: value contains a control character", l.Key)
	}
	return nil
}
