package api

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupported is wrapped by every problem about a field that is part of
// Cilium's rule format but that Membrane does not enforce (L7 rules,
// toFQDNs, nodeSelector, ...): errors.Is(err, ErrUnsupported) tells "valid
// for Cilium, refused here" from a plain mistake.
var ErrUnsupported = errors.New("not supported by Membrane")

// maxProblems bounds how many problems one Error reports: enough to fix a
// document in one go, not a wall of text for a file of the wrong kind.
const maxProblems = 20

// Problem is one thing wrong with a policy document.
type Problem struct {
	// At locates the rule or object in the document: "rule 2",
	// `CiliumNetworkPolicy "prod/web"`, "document 3: rule 1". Empty for a
	// problem found by Rule.Validate, which knows no document.
	At string
	// Field is the path of the offending field inside the rule or object,
	// e.g. "ingress[0].toPorts[0].rules"; empty when the problem is about
	// the whole rule or document.
	Field string
	Err   error
}

func (p Problem) Error() string {
	var parts []string
	if p.At != "" {
		parts = append(parts, p.At)
	}
	if p.Field != "" {
		parts = append(parts, p.Field)
	}
	return strings.Join(append(parts, p.Err.Error()), ": ")
}

func (p Problem) Unwrap() error { return p.Err }

// Error is what Parse and Rule.Validate return: every problem found (up to
// a limit), each naming the rule and the field. It renders one problem per
// line.
type Error struct {
	Problems []Problem
	// Omitted counts the problems found beyond the limit.
	Omitted int
}

func (e *Error) Error() string {
	lines := make([]string, 0, len(e.Problems)+1)
	for _, p := range e.Problems {
		lines = append(lines, p.Error())
	}
	if e.Omitted > 0 {
		lines = append(lines, fmt.Sprintf("... and %d more problems", e.Omitted))
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives errors.Is and errors.As access to each problem.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

// problems collects Problems while a document or rule is checked.
type problems struct {
	list    []Problem
	omitted int
}

func (ps *problems) add(at, field string, err error) {
	if len(ps.list) >= maxProblems {
		ps.omitted++
		return
	}
	ps.list = append(ps.list, Problem{At: at, Field: field, Err: err})
}

func (ps *problems) addf(at, field, format string, args ...any) {
	ps.add(at, field, fmt.Errorf(format, args...))
}

func (ps *problems) empty() bool { return len(ps.list) == 0 && ps.omitted == 0 }

func (ps *problems) err() error {
	if ps.empty() {
		return nil
	}
	return &Error{Problems: ps.list, Omitted: ps.omitted}
}

// unsupported is a problem message that wraps ErrUnsupported without
// repeating its text.
type unsupported string

func (u unsupported) Error() string        { return string(u) }
func (u unsupported) Is(target error) bool { return target == ErrUnsupported }

// joinPath appends a field name to a path.
func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// indexPath appends a list index to a path.
func indexPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
