package monitor

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/statedb/tables"
)

// DefaultQueueLen is how many events a subscriber may fall behind before it
// loses some.
const DefaultQueueLen = 1024

// Monitor fans decoded datapath events out to subscribers. Publish never
// blocks: a subscriber whose queue is full loses the event.
type Monitor struct {
	log    *slog.Logger
	enrich enricher

	mu      sync.RWMutex
	subs    map[*Subscription]struct{}
	stopped bool
	readErr error // why the ring buffer cannot be read, if it cannot

	received atomic.Uint64
	invalid  atomic.Uint64
	dropped  atomic.Uint64
}

// New returns a monitor that enriches events from the endpoints and
// identities tables of db. Run feeds it from the ring buffer.
func New(log *slog.Logger, db *statedb.DB, endpoints statedb.Table[*tables.Endpoint], identities statedb.Table[*tables.Identity]) *Monitor {
	return &Monitor{
		log:    log,
		enrich: enricher{db: db, endpoints: endpoints, identities: identities, clock: monotonicClock},
		subs:   map[*Subscription]struct{}{},
	}
}

// Stats are the monitor's counters since it started.
type Stats struct {
	// Received counts ring buffer records read.
	Received uint64
	// Invalid counts records that could not be decoded.
	Invalid uint64
	// Dropped counts events lost by slow subscribers (one per subscriber).
	Dropped uint64
	// Subscribers is the number of current subscribers.
	Subscribers int
}

// Stats returns the counters.
func (m *Monitor) Stats() Stats {
	m.mu.RLock()
	n := len(m.subs)
	m.mu.RUnlock()
	return Stats{Received: m.received.Load(), Invalid: m.invalid.Load(), Dropped: m.dropped.Load(), Subscribers: n}
}

// Subscription receives the events its filter matches until Close, or
// until the monitor stops (then the channel is closed).
type Subscription struct {
	m       *Monitor
	filter  models.MonitorFilter
	c       chan models.MonitorEvent
	closed  bool // under m.mu
	dropped atomic.Uint64
}

// Subscribe starts delivering events that match f; queueLen bounds how far
// the subscriber may fall behind (DefaultQueueLen if <= 0).
func (m *Monitor) Subscribe(f models.MonitorFilter, queueLen int) *Subscription {
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	s := &Subscription{m: m, filter: f, c: make(chan models.MonitorEvent, queueLen)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		s.closed = true
		close(s.c)
		return s
	}
	m.subs[s] = struct{}{}
	return s
}

// Events is the subscriber's queue.
func (s *Subscription) Events() <-chan models.MonitorEvent { return s.c }

// Dropped is how many events this subscriber lost because its queue was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.closeLocked(s)
}

func (m *Monitor) closeLocked(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	delete(m.subs, s)
	close(s.c)
	if n := s.dropped.Load(); n > 0 {
		m.log.Info("monitor subscriber did not keep up", "lost-events", n, "filter-type", s.filter.Type, "filter-endpoint", s.filter.Endpoint)
	}
}

// Publish delivers a decoded event to the subscribers whose filter
// matches. It enriches the event once, and only if somebody wants it.
func (m *Monitor) Publish(raw maps.Event) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.subs) == 0 {
		return
	}
	typ := typeName(raw.Type)
	var ev *models.MonitorEvent
	for s := range m.subs {
		if !s.filter.Match(typ, raw.EndpointID) {
			continue
		}
		if ev == nil {
			e := m.enrich.enrich(raw)
			ev = &e
		}
		select {
		case s.c <- *ev:
		default:
			s.dropped.Add(1)
			m.dropped.Add(1)
		}
	}
}

// publishRecord decodes a ring buffer record and publishes it.
func (m *Monitor) publishRecord(raw []byte) {
	m.received.Add(1)
	ev, err := Decode(raw)
	if err != nil {
		if m.invalid.Add(1) == 1 {
			m.log.Warn("undecodable datapath event (further ones are only counted)", "error", err)
		}
		return
	}
	m.Publish(ev)
}

// stop closes every subscription; later ones are closed at once. err, if
// not nil, is why no events will come (Err reports it).
func (m *Monitor) stop(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	m.readErr = err
	for s := range m.subs {
		m.closeLocked(s)
	}
}

// Err is why the monitor does not read events, nil while it does (or has
// not started yet).
func (m *Monitor) Err() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.readErr
}
