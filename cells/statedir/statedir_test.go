package statedir

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// JSONArray's output is the array of its entries, one to a line.
func TestJSONArray(t *testing.T) {
	for _, entries := range [][]string{nil, {`{"a":1}`}, {`{"a":1}`, `{"a":2}`, `{"a":3}`}} {
		out := JSONArray(entries)
		var back []json.RawMessage
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		got := make([]string, len(back))
		for i, b := range back {
			got[i] = string(b)
		}
		if !slices.Equal(got, entries) {
			t.Errorf("%q reads back as %v, want %v", out, got, entries)
		}
		if n := bytes.Count(out, []byte("\n")); len(entries) > 0 && n != len(entries)+2 {
			t.Errorf("%q: %d lines, want one per entry and the brackets'", out, n)
		}
	}
}
