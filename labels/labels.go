// Package labels is the vocabulary of security identities: a label is
// `source:key=value` (`k8s:app=web`, `reserved:host`), a Labels set is what an
// identity is derived from. Two sets with the same labels are equal no matter
// the order they were given in, so Labels is kept sorted and its String form
// is canonical: the identity allocator keys identities by it.
package labels

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/membrane-net/membrane/internal/clip"
)

// Well-known label sources.
const (
	SourceK8s       = "k8s"       // from the pod's metadata
	SourceContainer = "container" // given by the runtime in the endpoint request
	SourceReserved  = "reserved"  // identities the agent defines itself
	SourceCIDR      = "cidr"      // local identities of CIDR policy peers
	SourceAny       = "any"       // matches every source in selectors

	// DefaultSource is the source of a label written without one.
	DefaultSource = SourceContainer

	// NamespaceKey is the label that carries the pod's namespace.
	NamespaceKey = "io.kubernetes.pod.namespace"
)

// Label is one `source:key=value`.
type Label struct {
	Source string `json:"source"`
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
}

func (l Label) String() string {
	if l.Value == "" {
		return l.Source + ":" + l.Key
	}
	return l.Source + ":" + l.Key + "=" + l.Value
}

func compare(a, b Label) int {
	if c := strings.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

var (
	// Kubernetes qualified name with optional DNS prefix ("app.kubernetes.io/name").
	keyRe    = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	valueRe  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	sourceRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// Validate reports why a label cannot be used, naming it.
func (l Label) Validate() error {
	switch {
	case !sourceRe.MatchString(l.Source):
		return fmt.Errorf("label %s: invalid source %s (lowercase letters, digits, '-')", clip.Quote(l.String()), clip.Quote(l.Source))
	case len(l.Key) > 253 || !keyRe.MatchString(l.Key):
		return fmt.Errorf("label %s: invalid key %s (a Kubernetes label key of at most 253 bytes: [prefix/]name, alphanumerics, '-', '_', '.')", clip.Quote(l.String()), clip.Quote(l.Key))
	case len(l.Value) > 63 || !valueRe.MatchString(l.Value):
		return fmt.Errorf("label %s: invalid value %s (at most 63 alphanumerics, '-', '_', '.')", clip.Quote(l.String()), clip.Quote(l.Value))
	}
	return nil
}

// Parse reads `[source:]key[=value]`. A label without a source gets
// defaultSource. The result is validated.
func Parse(s, defaultSource string) (Label, error) {
	var l Label
	s = strings.TrimSpace(s)
	if s == "" {
		return l, fmt.Errorf("empty label")
	}
	kv := s
	// The source is whatever precedes the first ':' that comes before any '='.
	if i := strings.IndexByte(s, ':'); i >= 0 && (strings.IndexByte(s, '=') < 0 || i < strings.IndexByte(s, '=')) {
		l.Source, kv = s[:i], s[i+1:]
	} else {
		l.Source = defaultSource
	}
	if i := strings.IndexByte(kv, '='); i >= 0 {
		l.Key, l.Value = kv[:i], kv[i+1:]
	} else {
		l.Key = kv
	}
	return l, l.Validate()
}

// Labels is a sorted set of labels with unique source:key.
type Labels []Label

// New builds a set from labels; a later label replaces an earlier one with
// the same source and key.
func New(ls ...Label) Labels {
	out := make(Labels, 0, len(ls))
	for _, l := range ls {
		if i := slices.IndexFunc(out, func(o Label) bool { return o.Source == l.Source && o.Key == l.Key }); i >= 0 {
			out[i] = l
			continue
		}
		out = append(out, l)
	}
	slices.SortFunc(out, compare)
	return out
}

// ParseList parses each string with Parse and returns the set.
func ParseList(ss []string, defaultSource string) (Labels, error) {
	ls := make([]Label, 0, len(ss))
	for _, s := range ss {
		l, err := Parse(s, defaultSource)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return New(ls...), nil
}

// FromMap turns Kubernetes-style labels into a set with the given source.
func FromMap(m map[string]string, source string) Labels {
	ls := make([]Label, 0, len(m))
	for k, v := range m {
		ls = append(ls, Label{Source: source, Key: k, Value: v})
	}
	return New(ls...)
}

// Merge returns the union of a and b; b wins on the same source:key.
func Merge(a, b Labels) Labels {
	return New(append(slices.Clone(a), b...)...)
}

// String is the canonical form: sorted labels joined by ';'.
func (ls Labels) String() string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.String()
	}
	return strings.Join(parts, ";")
}

// Strings returns each label's String.
func (ls Labels) Strings() []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.String()
	}
	return out
}

// Equal reports whether both sets hold the same labels.
func (ls Labels) Equal(o Labels) bool { return slices.Equal(ls, o) }

// Has reports whether the set holds l exactly.
func (ls Labels) Has(l Label) bool { return slices.Contains(ls, l) }

// Get returns the value of source:key.
func (ls Labels) Get(source, key string) (string, bool) {
	for _, l := range ls {
		if l.Source == source && l.Key == key {
			return l.Value, true
		}
	}
	return "", false
}

// MaxLabels bounds the labels of one endpoint or pod: a label set is an
// identity's key, held by every node and compared on every change, so a
// pod with thousands of labels would cost every agent. Kubernetes sets no
// such bound; real workloads carry tens.
const MaxLabels = 256

// Validate checks every label, and that there are at most MaxLabels.
func (ls Labels) Validate() error {
	if len(ls) > MaxLabels {
		return fmt.Errorf("too many labels: %d, at most %d", len(ls), MaxLabels)
	}
	for _, l := range ls {
		if err := l.Validate(); err != nil {
			return err
		}
	}
	return nil
}
