// Package events is the wire format of the agent's event stream,
// GET /v1/monitor: one JSON Event per line, as the monitor cell writes it
// and `membrane monitor` reads it. It is a package of its own so the CLI
// can decode the stream without linking the agent's cells.
package events

import (
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Types of records in the stream.
const (
	// TypeDrop: the datapath dropped a packet (Verdict "dropped").
	TypeDrop = "drop"
	// TypeVerdict: the datapath allowed a new flow (Verdict "forwarded");
	// later packets of the flow pass through conntrack without an event.
	TypeVerdict = "verdict"
	// TypeLost: the subscriber did not keep up: Lost events matching its
	// filter were dropped for it since the previous such record (they
	// would have come around here in the stream). Only Time and Lost are
	// set.
	TypeLost = "lost"
)

// Verdicts.
const (
	VerdictForwarded = "forwarded"
	VerdictDropped   = "dropped"
)

// Event is one record of the stream.
type Event struct {
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Lost is set on records of type "lost" only.
	Lost uint64 `json:"lost,omitempty"`

	Verdict string `json:"verdict,omitempty"`
	// Reason names why the datapath decided so (maps.ReasonName):
	// allowed-by-policy, policy-not-enforced, policy-denied,
	// policy-deny-rule, spoofed-source, malformed, ...
	Reason string `json:"reason,omitempty"`

	Endpoint Endpoint `json:"endpoint,omitzero"`
	// Direction is relative to the endpoint: ingress (to it) or egress
	// (from it).
	Direction string `json:"direction,omitempty"`
	// Protocol is TCP, UDP, SCTP, ICMP, ICMPv6, or the IP protocol number.
	Protocol string `json:"protocol,omitempty"`
	// ICMPType is set for ICMP and ICMPv6 (the ports are not).
	ICMPType *uint8 `json:"icmp-type,omitempty"`

	Source      Peer `json:"source,omitzero"`
	Destination Peer `json:"destination,omitzero"`
}

// Endpoint is the endpoint whose program saw the packet.
type Endpoint struct {
	ID uint16 `json:"id"`
	// Pod is "namespace/name", empty for an endpoint without a pod or one
	// the agent no longer knows.
	Pod string `json:"pod,omitempty"`
	// InterfaceIndex is the host-side veth the program runs on.
	InterfaceIndex uint32 `json:"interface-index,omitempty"`
}

// Peer is one end of the packet.
type Peer struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port,omitempty"`
	// Identity is the security identity the datapath attributed to the
	// address (0: not looked up, as for the destination of a spoofed
	// packet).
	Identity Identity `json:"identity"`
}

// Identity is a security identity and its labels at the time of the event.
type Identity struct {
	ID     uint32   `json:"id"`
	Labels []string `json:"labels"`
}

// Filter selects the events a subscriber gets.
type Filter struct {
	// Type is TypeDrop, TypeVerdict or "" for both.
	Type string
	// Endpoint, if not zero, keeps only that endpoint's events.
	Endpoint uint16
}

// Match reports whether an event of type typ seen by endpoint ep passes.
func (f Filter) Match(typ string, ep uint16) bool {
	return (f.Type == "" || f.Type == typ) && (f.Endpoint == 0 || f.Endpoint == ep)
}

// ParseFilter reads the query of GET /v1/monitor: type=drop|verdict|all
// (default all) and endpoint=ID.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	switch t := q.Get("type"); t {
	case "", "all":
	case TypeDrop, TypeVerdict:
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

// Query is the query string ParseFilter reads back into f.
func (f Filter) Query() url.Values {
	q := url.Values{}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.Endpoint != 0 {
		q.Set("endpoint", strconv.Itoa(int(f.Endpoint)))
	}
	return q
}
