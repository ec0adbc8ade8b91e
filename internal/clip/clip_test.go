package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"app=web", `"app=web"`},
		{strings.Repeat("a", Max), `"` + strings.Repeat("a", Max) + `"`},
		{strings.Repeat("a", 10000), `"` + strings.Repeat("a", Max) + `"... (10000 bytes)`},
		// A cut inside a character moves back to its start.
		{strings.Repeat("a", Max-1) + "é" + "b", `"` + strings.Repeat("a", Max-1) + `"... (66 bytes)`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q...) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func FuzzQuote(f *testing.F) {
	f.Add("app=web")
	f.Add(strings.Repeat("é", 100))
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		q := Quote(s)
		if len(q) > 4*Max+40 {
			t.Fatalf("Quote of %d bytes is %d bytes long", len(s), len(q))
		}
		if !utf8.ValidString(q) {
			t.Fatalf("Quote(%q) = %q is not valid UTF-8", s, q)
		}
	})
}
