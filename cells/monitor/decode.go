package monitor

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/cilium/statedb"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// EventSize is the size of a ring buffer record (struct event in bpf/).
var EventSize = binary.Size(maps.Event{})

// Decode reads one ring buffer record. The datapath object is built for
// little-endian machines only (membrane_bpfel), so records are too.
func Decode(raw []byte) (maps.Event, error) {
	var ev maps.Event
	if len(raw) < EventSize {
		return ev, fmt.Errorf("event record of %d bytes, want %d (bpf/ and datapath/maps out of step?)", len(raw), EventSize)
	}
	if _, err := binary.Decode(raw[:EventSize], binary.LittleEndian, &ev); err != nil {
		return ev, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

// typeName is the stream's name of an event type.
func typeName(t uint8) string {
	switch t {
	case maps.EventDrop:
		return models.MonitorTypeDrop
	case maps.EventVerdict:
		return models.MonitorTypeVerdict
	}
	return "type-" + strconv.Itoa(int(t))
}

// clock converts kernel timestamps (CLOCK_MONOTONIC ns) to wall-clock time.
type clock func(ktime uint64) time.Time

// monotonicClock maps a timestamp to now minus its age.
func monotonicClock(ktime uint64) time.Time {
	now := time.Now()
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return now
	}
	age := time.Duration(ts.Nano() - int64(ktime))
	return now.Add(-age)
}

// enricher turns a raw event into the stream's record, looking up what
// the numbers stand for in the tables as they are now.
type enricher struct {
	db         *statedb.DB
	endpoints  statedb.Table[*tables.Endpoint]
	identities statedb.Table[*tables.Identity]
	clock      clock
}

func (e *enricher) enrich(raw maps.Event) models.MonitorEvent {
	ev := models.MonitorEvent{
		Time:        e.clock(raw.Timestamp),
		Type:        typeName(raw.Type),
		Verdict:     models.MonitorVerdictForwarded,
		Reason:      maps.ReasonName(raw.Reason),
		Endpoint:    models.MonitorEndpoint{ID: raw.EndpointID, InterfaceIndex: raw.IfIndex},
		Direction:   maps.DirectionName(raw.Dir),
		Protocol:    maps.ProtocolName(raw.Protocol),
		Source:      models.MonitorPeer{IP: addr(raw.Family, raw.SAddr)},
		Destination: models.MonitorPeer{IP: addr(raw.Family, raw.DAddr)},
	}
	if raw.Type == maps.EventDrop || maps.IsDrop(raw.Reason) {
		ev.Verdict = models.MonitorVerdictDropped
	}
	switch raw.Protocol {
	case maps.ProtoICMP, maps.ProtoICMPv6:
		// The datapath puts the ICMP type where the port would be.
		t := uint8(binary.BigEndian.Uint16(raw.DPort[:]))
		ev.ICMPType = &t
	default:
		ev.Source.Port = binary.BigEndian.Uint16(raw.SPort[:])
		ev.Destination.Port = binary.BigEndian.Uint16(raw.DPort[:])
	}

	txn := e.db.ReadTxn()
	if ep, _, ok := e.endpoints.Get(txn, tables.EndpointIDIndex.Query(raw.EndpointID)); ok {
		ev.Endpoint.Pod = ep.PodName()
	}
	ev.Source.Identity = e.identity(txn, raw.SrcIdentity)
	ev.Destination.Identity = e.identity(txn, raw.DstIdentity)
	return ev
}

func (e *enricher) identity(txn statedb.ReadTxn, id uint32) models.MonitorIdentity {
	out := models.MonitorIdentity{ID: id, Labels: []string{}}
	if id == tables.IdentityUnknown {
		return out
	}
	if ident, _, ok := e.identities.Get(txn, tables.IdentityIDIndex.Query(id)); ok {
		out.Labels = ident.Labels.Strings()
	} else if name, ok := tables.ReservedIdentities[id]; ok {
		// A custom agent without the identity allocator still names these.
		out.Labels = []string{labels.Label{Source: labels.SourceReserved, Key: name}.String()}
	}
	return out
}

// addr renders an address of the given family ("" for an unknown family).
func addr(family uint8, b [16]byte) string {
	if a := maps.Addr(family, b); a.IsValid() {
		return a.String()
	}
	return ""
}
