package models

import (
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// GET /v1/monitor streams MonitorEvents as newline-delimited JSON, one
// per line, as the monitor cell writes them and `membrane monitor` reads
// them.

// Types of records in the event stream.
const (
	// MonitorTypeDrop: the datapath dropped a packet (Verdict "dropped").
	MonitorTypeDrop = "drop"
	// MonitorTypeVerdict: the datapath allowed a new flow (Verdict
	// "forwarded"); later packets of the flow pass through conntrack
	// without an event.
	MonitorTypeVerdict = "verdict"
	// MonitorTypeLost: the subscriber did not keep up: Lost events
	// matching its filter were dropped for it since the previous such
	// record (they would have come around here in the stream). Only Time
	// and Lost are set.
	MonitorTypeLost = "lost"
)

// Verdicts of events.
const (
	MonitorVerdictForwarded = "forwarded"
	MonitorVerdictDropped   = "dropped"
)

// MonitorEvent is one record of the event stream.
type MonitorEvent struct {
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Lost is set on records of type "lost" only.
	Lost uint64 `json:"lost,omitempty"`

	Verdict string `json:"verdict,omitempty"`
	// Reason names why the datapath decided so (maps.ReasonName):
	// allowed-by-policy, policy-not-enforced, policy-denied,
	// policy-deny-rule, spoofed-source, malformed, fragment-no-first,
	// fragment-too-short, ipv6-ext-headers, ...
	Reason string `json:"reason,omitempty"`

	Endpoint MonitorEndpoint `json:"endpoint,omitzero"`
	// Direction is relative to the endpoint: ingress (to it) or egress
	// (from it).
	Direction string `json:"direction,omitempty"`
	// Protocol is TCP, UDP, SCTP, ICMP, ICMPv6, or the IP protocol number.
	Protocol string `json:"protocol,omitempty"`
	// ICMPType is set for ICMP and ICMPv6 (the ports are not).
	ICMPType *uint8 `json:"icmp-type,omitempty"`

	Source      MonitorPeer `json:"source,omitzero"`
	Destination MonitorPeer `json:"destination,omitzero"`
}

// MonitorEndpoint is the endpoint whose program saw the packet.
type MonitorEndpoint struct {
	ID uint16 `json:"id"`
	// Pod is "namespace/name", empty for an endpoint without a pod or one
	// the agent no longer knows.
	Pod string `json:"pod,omitempty"`
	// InterfaceIndex is the host-side veth the program runs on.
	InterfaceIndex uint32 `json:"interface-index,omitempty"`
}

// MonitorPeer is one end of the packet.
type MonitorPeer struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port,omitempty"`
	// Identity is the security identity the datapath attributed to the
	// address (0: not looked up, as for the destination of a spoofed
	// packet).
	Identity MonitorIdentity `json:"identity"`
}

// MonitorIdentity is a security identity and its labels at the time of
// the event.
type MonitorIdentity struct {
	ID     uint32   `json:"id"`
	Labels []string `json:"labels"`
}

// MonitorFilter selects the events a subscriber gets: the query of
// GET /v1/monitor (type=drop|verdict|all, endpoint=ID).
type MonitorFilter struct {
	// Type is MonitorTypeDrop, MonitorTypeVerdict or "" for both.
	Type string
	// Endpoint, if not zero, keeps only that endpoint's events.
	Endpoint uint16
}

// Match reports whether an event of type typ seen by endpoint ep passes.
func (f MonitorFilter) Match(typ string, ep uint16) bool {
	return (f.Type == "" || f.Type == typ) && (f.Endpoint == 0 || f.Endpoint == ep)
}

// ParseMonitorFilter reads the query of GET /v1/monitor: type=drop|verdict|all
// (default all) and endpoint=ID.
func ParseMonitorFilter(q url.Values) (MonitorFilter, error) {
	var f MonitorFilter
	switch t := q.Get("type"); t {
	case "", "all":
	case MonitorTypeDrop, MonitorTypeVerdict:
		f.Type = t
	default:
		return f, fmt.Errorf("invalid type %q: want drop, verdict or all", t)
	}
	if s := q.Get("endpoint"); s != "" {
		id, err := strconv.ParseUint(s, 10, 16)
		if err != nil || id == 0 {
			return f, fmt.Errorf("invalid endpoint %q: want an endpoint ID (1..65535; `membrane endpoint list` shows them)", s)
		}
		f.Endpoint = uint16(id)
	}
	return f, nil
}

// Query is the query string ParseMonitorFilter reads back into f.
func (f MonitorFilter) Query() url.Values {
	q := url.Values{}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.Endpoint != 0 {
		q.Set("endpoint", strconv.Itoa(int(f.Endpoint)))
	}
	return q
}

// MonitorStats is the answer of GET /v1/monitor/stats: what the monitor
// read from the datapath and what it lost, since the agent started
// (LostInDatapath: since the metrics map was created; it survives restarts).
type MonitorStats struct {
	Received          uint64 `json:"received"`
	Invalid           uint64 `json:"invalid"`
	Subscribers       int    `json:"subscribers"`
	LostBySubscribers uint64 `json:"lost-by-subscribers"`
	LostInDatapath    uint64 `json:"lost-in-datapath"`
}
