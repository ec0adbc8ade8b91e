package status

import (
	"net/http"
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
