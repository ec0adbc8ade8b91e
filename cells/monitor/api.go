package monitor

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/datapath/maps"
)

// newRoutes serves the event stream and its counters:
//
//	GET /v1/monitor[?type=drop|verdict|all][&endpoint=ID]
//	GET /v1/monitor/stats
//
// The stream: 200 with newline-delimited JSON (models.MonitorEvent), one
// line per event, flushed as it happens, until the client goes away or the
// agent stops; 400 for an invalid filter (models.MonitorFilter); 503 if
// the ring buffer cannot be read.
func newRoutes(m *Monitor, dp maps.EventMaps) apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/monitor", Handler: m.Handler(DefaultQueueLen)},
		{Pattern: "GET /v1/monitor/stats", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			st, err := m.StatsWithDatapath(dp.MetricsMap())
			if err != nil {
				apiserver.WriteError(w, apiserver.Errorf(http.StatusInternalServerError, "read the datapath's lost events: %v", err))
				return
			}
			apiserver.WriteJSON(w, http.StatusOK, st)
		})},
	}}
}

// Handler streams events to an HTTP client; queueLen bounds how far that
// client may fall behind before it loses events.
func (m *Monitor) Handler(queueLen int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := models.ParseMonitorFilter(r.URL.Query())
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
					if enc.Encode(models.MonitorEvent{Time: time.Now(), Type: models.MonitorTypeLost, Lost: lost - reported}) != nil {
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

// StatsWithDatapath adds to Stats the events the datapath could not queue
// (the monitor-event-lost counters of the metrics map, summed over
// endpoints and CPUs); without a metrics map that part is 0.
func (m *Monitor) StatsWithDatapath(metrics *ebpf.Map) (models.MonitorStats, error) {
	st := m.Stats()
	out := models.MonitorStats{Received: st.Received, Invalid: st.Invalid, Subscribers: st.Subscribers, LostBySubscribers: st.Dropped}
	if metrics == nil {
		return out, nil
	}
	var (
		k    maps.MetricsKey
		perC []maps.MetricsValue
	)
	it := metrics.Iterate()
	for it.Next(&k, &perC) {
		if k.Reason != maps.ReasonEventLost {
			continue
		}
		for _, v := range perC {
			out.LostInDatapath += v.Packets
		}
	}
	return out, it.Err()
}
