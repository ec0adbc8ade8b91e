package labels

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultFilterPatterns are the patterns every filter starts with. The
// inclusions only matter once a user adds inclusions of their own (allow-list
// mode): the namespace, the namespace's labels and the app.kubernetes.io
// labels stay relevant then.
var DefaultFilterPatterns = []string{
	`io\.kubernetes\.pod\.namespace$`,    // keep the namespace: policies select on it
	`io\.cilium\.k8s\.namespace\.labels`, // keep the namespace's labels (io.cilium.k8s.namespace.labels.KEY): policies select on them
	`app\.kubernetes\.io`,                // keep the recommended application labels

	`!io\.kubernetes`,                              // other io.kubernetes.* (container name, pod name, ...)
	`!kubernetes\.io`,                              // kubernetes.io/* (hostname, ...)
	`!.*beta\.kubernetes\.io`,                      // *.beta.kubernetes.io/* (topology, ...)
	`!k8s\.io`,                                     // k8s.io/*
	`!statefulset\.kubernetes\.io/pod-name$`,       // unique per StatefulSet pod
	`!apps\.kubernetes\.io/pod-index$`,             // unique per StatefulSet pod
	`!batch\.kubernetes\.io/job-completion-index$`, // unique per indexed Job pod
	`!batch\.kubernetes\.io/controller-uid$`,       // unique per Job run
	`!batch\.kubernetes\.io/job-name$`,             // set by the Job controller
	`!controller-uid$`,                             // legacy Job label
	`!job-name$`,                                   // legacy Job label
	`!pod-template-generation$`,                    // DaemonSet generation
	`!pod-template-hash$`,                          // changes with every Deployment rollout
	`!controller-revision-hash$`,                   // changes with every StatefulSet/DaemonSet rollout
	`!annotation\.`,                                // annotations turned into labels
	`!etcd_node$`,                                  // etcd operator's per-member label
}

// FilterPattern is one parsed pattern of a Filter.
type FilterPattern struct {
	// Source the pattern applies to; "" applies to every source.
	Source string
	// Expr is the regular expression on the key, anchored at its start.
	Expr string
	// Exclude drops matching labels instead of keeping them.
	Exclude bool

	re *regexp.Regexp
}

// ParseFilterPattern reads `[source:][!]regex` (or `![source:]regex`).
func ParseFilterPattern(s string) (FilterPattern, error) {
	var p FilterPattern
	rest := strings.TrimSpace(s)
	if r, ok := strings.CutPrefix(rest, "!"); ok {
		p.Exclude, rest = true, r
	}
	// A source is a label source name before the first ':'; anything else
	// before a ':' belongs to the expression (e.g. `(?:a|b)`).
	if i := strings.IndexByte(rest, ':'); i > 0 && sourceRe.MatchString(rest[:i]) {
		p.Source, rest = rest[:i], rest[i+1:]
		if p.Source == SourceAny {
			p.Source = ""
		}
	}
	if r, ok := strings.CutPrefix(rest, "!"); ok {
		if p.Exclude {
			return FilterPattern{}, fmt.Errorf("label filter pattern %q: '!' given twice", s)
		}
		p.Exclude, rest = true, r
	}
	if rest == "" {
		return FilterPattern{}, fmt.Errorf("label filter pattern %q: empty expression (want [source:][!]regex, e.g. k8s:!pod-template-hash)", s)
	}
	re, err := regexp.Compile(`^(?:` + rest + `)`)
	if err != nil {
		return FilterPattern{}, fmt.Errorf("label filter pattern %q: %w", s, err)
	}
	p.Expr, p.re = rest, re
	return p, nil
}

// String is the pattern in the form ParseFilterPattern reads. A pattern
// for every source is written without one, unless its expression would
// then be read as a source or as a '!' (`any:` is written then).
func (p FilterPattern) String() string {
	s := p.Expr
	if p.Exclude {
		s = "!" + s
	}
	source := p.Source
	if i := strings.IndexByte(p.Expr, ':'); source == "" && (strings.HasPrefix(p.Expr, "!") || i > 0 && sourceRe.MatchString(p.Expr[:i])) {
		source = SourceAny
	}
	if source != "" {
		s = source + ":" + s
	}
	return s
}

// match reports whether the pattern matches l, and the length of the
// matched part of the key.
func (p FilterPattern) match(l Label) (bool, int) {
	if p.Source != "" && p.Source != l.Source {
		return false, 0
	}
	loc := p.re.FindStringIndex(l.Key)
	if loc == nil {
		return false, 0
	}
	return true, loc[1]
}

// Filter decides which of an endpoint's labels take part
// in its identity. Labels that differ between replicas of the same workload
// (pod-template-hash, a StatefulSet pod's name, a Job's controller-uid, ...)
// would otherwise give every pod its own identity, and every identity costs
// policy computation and BPF map entries.
//
// A filter is a list of patterns, written `[source:][!]regex`:
//
//   - regex is a Go regular expression matched against the label key,
//     implicitly anchored at the start of the key (`k8s\.io` matches every
//     key that begins with "k8s.io"; end it with `$` to match a whole key);
//   - source restricts the pattern to labels of that source (`k8s:app`);
//     without one, or with `any:`, it applies to every source;
//   - `!` makes it an exclusion (a leading `!k8s:...` is accepted too).
//
// A label is kept when no exclusion matches it, or when an inclusion
// matches a longer part of its key than the shortest matching exclusion:
// `!io\.kubernetes` drops io.kubernetes.container.name but the longer
// inclusion `io\.kubernetes\.pod\.namespace$` keeps the namespace label.
// As soon as one inclusion is configured beyond the defaults, the filter
// becomes an allow list: a label must then match an inclusion to be kept.
// Labels of source reserved are always kept. These are Cilium's
// semantics, so Cilium's `--labels` settings carry over.
//
// A Filter is immutable and safe for concurrent use.
type Filter struct {
	patterns  []FilterPattern
	allowList bool
}

// NewFilter builds a filter of DefaultFilterPatterns followed by extra
// (empty strings are ignored). An inclusion among extra turns the filter
// into an allow list.
func NewFilter(extra ...string) (*Filter, error) {
	f := &Filter{}
	for _, s := range DefaultFilterPatterns {
		p, err := ParseFilterPattern(s)
		if err != nil {
			panic(fmt.Sprintf("default label filter: %v", err))
		}
		f.patterns = append(f.patterns, p)
	}
	for _, s := range extra {
		if strings.TrimSpace(s) == "" {
			continue
		}
		p, err := ParseFilterPattern(s)
		if err != nil {
			return nil, err
		}
		if !p.Exclude {
			f.allowList = true
		}
		f.patterns = append(f.patterns, p)
	}
	return f, nil
}

// DefaultFilter is the filter of DefaultFilterPatterns alone.
func DefaultFilter() *Filter {
	f, _ := NewFilter()
	return f
}

// Patterns returns the filter's patterns in order.
func (f *Filter) Patterns() []string {
	out := make([]string, len(f.patterns))
	for i, p := range f.patterns {
		out[i] = p.String()
	}
	return out
}

// AllowList reports whether only labels matching an inclusion are kept.
func (f *Filter) AllowList() bool { return f.allowList }

// Relevant reports whether l takes part in identities.
func (f *Filter) Relevant(l Label) bool {
	if l.Source == SourceReserved {
		return true
	}
	included, excluded := -1, -1 // longest inclusion, shortest exclusion; -1: none matched
	for _, p := range f.patterns {
		ok, n := p.match(l)
		switch {
		case !ok:
		case p.Exclude:
			if excluded < 0 || n < excluded {
				excluded = n
			}
		default:
			if n > included {
				included = n
			}
		}
	}
	if excluded >= 0 {
		return included > excluded
	}
	return !f.allowList || included >= 0
}

// Filter returns the security labels of ls: the ones Relevant keeps.
func (f *Filter) Filter(ls Labels) Labels {
	sec, _ := f.Split(ls)
	return sec
}

// Split returns the security labels of ls and the ones the filter drops.
func (f *Filter) Split(ls Labels) (security, ignored Labels) {
	security = Labels{}
	for _, l := range ls {
		if f.Relevant(l) {
			security = append(security, l)
		} else {
			ignored = append(ignored, l)
		}
	}
	return security, ignored
}
