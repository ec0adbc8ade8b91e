package labels

import "testing"

// FuzzParse checks that Parse never panics, that what it accepts is valid,
// and that a parsed label's String parses back to the same label whatever
// the default source (the identity allocator persists labels as strings).
// Without -fuzz only the seeds run.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"k8s:app=web", "app=web", "reserved:host", "k8s:io.kubernetes.pod.namespace=default",
		"k8s:app.kubernetes.io/name=shop", "a:b:c=d", "=", ":", "k8s:=x", "x=y=z",
		"container:a_b.c-d=E_F.g-h", " k8s:app=web ", "k8s:app=", "\x00:\xff",
	} {
		f.Add(s, "container")
	}
	f.Fuzz(func(t *testing.T, s, defaultSource string) {
		l, err := Parse(s, defaultSource)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid label: %v", s, err)
		}
		again, err := Parse(l.String(), "other")
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", s, l.String(), err)
		}
		if again != l {
			t.Fatalf("round trip of %q: %+v became %+v", s, l, again)
		}
	})
}

// FuzzParseFilterPattern checks that pattern parsing never panics and that
// an accepted pattern round-trips through String.
func FuzzParseFilterPattern(f *testing.F) {
	for _, s := range []string{"k8s:!pod-template-hash", "!k8s:x", "any:app$", "(?:a|b):c", "k8s:(", "!", "a**"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseFilterPattern(s)
		if err != nil {
			return
		}
		q, err := ParseFilterPattern(p.String())
		if err != nil || q.String() != p.String() {
			t.Fatalf("pattern %q: String %q does not round-trip (%v)", s, p.String(), err)
		}
		_ = DefaultFilter().Relevant(Label{Source: "k8s", Key: s})
	})
}
