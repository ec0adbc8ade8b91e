package status

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

func TestRuntimeCounts(t *testing.T) {
	v, code, err := runtimeCounts(nil, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("code %d, error %v", code, err)
	}
	r := v.(*models.Runtime)
	if r.Goroutines < 1 || r.Threads < 1 || r.OpenFDs < 3 || r.RSSBytes < 1<<20 || r.HeapBytes < 1 {
		t.Fatalf("implausible counts %+v", r)
	}
}

func TestRuntimeCountsAfterGC(t *testing.T) {
	v, code, err := runtimeCounts(nil, httptest.NewRequest("GET", "/v1/debug/runtime?gc=1", nil))
	if err != nil || code != http.StatusOK || v.(*models.Runtime).HeapBytes < 1 {
		t.Fatalf("gc=1: %v, code %d, error %v", v, code, err)
	}
	if _, _, err := runtimeCounts(nil, httptest.NewRequest("GET", "/v1/debug/runtime?gc=yes", nil)); err == nil ||
		!strings.Contains(err.Error(), "gc=1") {
		t.Fatalf("gc=yes: error %v, want one that says to use gc=1", err)
	}
}

func TestHeapProfile(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"", "\x1f\x8b"}, // gzipped protobuf, what go tool pprof reads
		{"?debug=1", "heap profile:"},
	} {
		w := httptest.NewRecorder()
		heapProfile(w, httptest.NewRequest("GET", "/v1/debug/heap"+tc.query, nil))
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), tc.want) {
			t.Errorf("%q: code %d, body starts %q, want %q", tc.query, w.Code, w.Body.String()[:min(20, w.Body.Len())], tc.want)
		}
	}
	w := httptest.NewRecorder()
	heapProfile(w, httptest.NewRequest("GET", "/v1/debug/heap?debug=2", nil))
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "debug=1") {
		t.Errorf("debug=2: code %d, body %q, want a 400 that says to use debug=1", w.Code, w.Body.String())
	}
}
