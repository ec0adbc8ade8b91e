package apiserver

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// A client that sends its headers and then trickles its body must not
// hold what other clients need. The handlers of ADD and DEL take one of a
// few limiter slots (cells/endpointapi); a body read inside the slot
// would let 16 slow clients block every pod start. So the server reads
// each request's body whole, within bodyTimeout, before any handler runs,
// and bounds connections and idle time. Nothing here is a response
// timeout: streams (monitor, statedb changes) last as long as their
// client wants.
const (
	headerTimeout      = 10 * time.Second
	bodyTimeoutDefault = 10 * time.Second
	idleTimeout        = 2 * time.Minute
	// maxConns bounds open connections to the socket; beyond it new ones
	// wait in the listen backlog. Each slow client is dropped within
	// headerTimeout + bodyTimeout, so they cannot hold the socket long.
	maxConns = 256
)

// bodyTimeout is how long a request body may take; tests shorten it.
var bodyTimeout = bodyTimeoutDefault

// readBodyFirst reads the request body into memory (at most
// MaxBodyBytes+1 bytes: a handler still sees that it is too large and
// answers 413) within bodyTimeout, then hands the request on. A body not
// received in time is answered 408 without reaching the handler.
func readBodyFirst(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// Fails only where there is no connection (a test recorder).
		_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
		data, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			// The deadline stays expired and the connection closes after
			// the answer: the server would otherwise wait for the rest of
			// the body before answering, to reuse the connection.
			w.Header().Set("Connection", "close")
			if errors.Is(err, os.ErrDeadlineExceeded) {
				WriteError(w, Errorf(http.StatusRequestTimeout, "request body not received within %s", bodyTimeout))
			} else {
				WriteError(w, Errorf(http.StatusBadRequest, "reading request body: %v", err))
			}
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(data))
		h.ServeHTTP(w, r)
	})
}
