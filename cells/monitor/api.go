package monitor

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/monitor/events"
)

// newRoutes serves the event stream:
//
//	GET /v1/monitor[?type=drop|verdict|all][&endpoint=ID]
//
// 200 with newline-delimited JSON (events.Event), one line per event,
// flushed as it happens, until the client goes away or the agent stops;
// 400 for an invalid filter; 503 if the ring buffer cannot be read.
func newRoutes(m *Monitor) apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/monitor", Handler: m.Handler(DefaultQueueLen)},
	}}
}

// Handler streams events to an HTTP client; queueLen bounds how far that
// client may fall behind before it loses events.
func (m *Monitor) Handler(queueLen int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := events.ParseFilter(r.URL.Query())
		if err != nil {
			apiserver.WriteError(w, apiserver.WithStatus(http.StatusBadRequest, err))
			return
		}
		if err := m.Err(); err != nil {
			apiserver.WriteError(w, apiserver.Errorf(http.StatusServiceUnavailable, "the monitor does not read datapath events: %v", err))
			return
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			apiserver.WriteError(w, apiserver.Errorf(http.StatusInternalServerError, "streaming is not supported by this server"))
			return
		}
		sub := m.Subscribe(f, queueLen)
		defer sub.Close()

		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		flusher.Flush() // the client knows it is subscribed before any event

		enc := json.NewEncoder(w)
		var reported uint64
		for {
			select {
			case <-r.Context().Done():
				return
			case ev, ok := <-sub.Events():
				if !ok {
					return // the agent is stopping
				}
				if lost := sub.Dropped(); lost > reported {
					if enc.Encode(events.Event{Time: time.Now(), Type: events.TypeLost, Lost: lost - reported}) != nil {
						return
					}
					reported = lost
				}
				if enc.Encode(ev) != nil {
					return
				}
				flusher.Flush()
			}
		}
	})
}
