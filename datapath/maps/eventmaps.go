package maps

import "github.com/cilium/ebpf"

// EventMaps are the maps a reader of the datapath's events needs, as the
// agent opened them: the events ring buffer (EventsMapName) and the
// metrics map (MetricsMapName), whose monitor-event-lost counters count
// the events the ring buffer had no room for. The loader cell provides it
// and the monitor cell reads it, so neither cell knows the other. Both
// are nil until the datapath is loaded (the loader's start hook): read
// them from a later start hook, or afterwards.
type EventMaps interface {
	EventsMap() *ebpf.Map
	MetricsMap() *ebpf.Map
}
