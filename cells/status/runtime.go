package status

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
)

// runtimeCounts answers GET /v1/debug/runtime from the Go runtime and
// /proc/self: what a leak check compares before and after churn. With
// ?gc=1 it collects garbage first, so HeapBytes is the live heap rather
// than whatever the last cycle left to sweep: what a memory figure per
// endpoint needs. Twice, because objects with finalizers are freed only
// by the cycle after the one that found them unreachable. It stops the
// world for a few milliseconds; a leak check does not need it.
func runtimeCounts(_ http.ResponseWriter, req *http.Request) (any, int, error) {
	if req != nil {
		switch gc := req.URL.Query().Get("gc"); gc {
		case "", "0", "false":
		case "1", "true":
			runtime.GC()
			runtime.GC()
		default:
			return nil, 0, apiserver.Errorf(http.StatusBadRequest,
				"GET /v1/debug/runtime: gc=%q: use gc=1 to collect garbage before reading, or leave it out", gc)
		}
	}
	r := &models.Runtime{Goroutines: runtime.NumGoroutine()}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, 0, fmt.Errorf("counting open files: %w", err)
	}
	r.OpenFDs = len(fds) - 1 // the directory ReadDir held open
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, 0, fmt.Errorf("reading process status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, _ := bytes.Cut(sc.Bytes(), []byte(":"))
		fields := bytes.Fields(value)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(string(fields[0]), 10, 64)
		switch string(name) {
		case "Threads":
			r.Threads = int(n)
		case "VmRSS": // in kB
			r.RSSBytes = n << 10
		}
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		r.HeapBytes = int64(sample[0].Value.Uint64())
	}
	return r, http.StatusOK, nil
}
