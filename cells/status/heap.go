package status

import (
	"net/http"
	"runtime"
	"runtime/pprof"

	"github.com/membrane-net/membrane/cells/apiserver"
)

// heapProfile answers GET /v1/debug/heap with the Go heap profile
// (runtime/pprof's, what `go tool pprof` reads): which code allocated
// what the agent holds, for finding what grows with the endpoints. The
// profile is as of the last garbage collection; it collects one first,
// so it shows the objects live now. The runtime samples one allocation
// per 512 KiB by default; GODEBUG=memprofilerate=512 in the agent's
// environment makes a profile fine enough for a few KiB per endpoint,
// at some CPU on every allocation. ?debug=1 is the text form, with the
// runtime's memory statistics (heap in use, idle, released; stacks) at
// its end.
func heapProfile(w http.ResponseWriter, r *http.Request) {
	debug := 0
	switch d := r.URL.Query().Get("debug"); d {
	case "", "0":
	case "1":
		debug = 1
	default:
		apiserver.Handle(func(http.ResponseWriter, *http.Request) (any, int, error) {
			return nil, 0, apiserver.Errorf(http.StatusBadRequest,
				"GET /v1/debug/heap: debug=%q: use debug=1 for the text form, or leave it out", d)
		}).ServeHTTP(w, r)
		return
	}
	runtime.GC()
	if debug == 1 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	// Once the first bytes are out an error can only cut the answer short.
	_ = pprof.Lookup("heap").WriteTo(w, debug)
}
