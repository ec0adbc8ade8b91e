package tables

import (
	"net/netip"
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// EndpointMapEntry is what the datapath needs to know of a local endpoint,
// keyed by its host-side interface: the programs on that veth look it up to
// learn whose traffic they see. Written by regeneration from the endpoints
// table, reconciled by the loader into the pinned endpoints map.
type EndpointMapEntry struct {
	IfIndex    uint32          `json:"ifindex"`
	EndpointID uint16          `json:"endpoint-id"`
	Identity   NumericIdentity `json:"identity"`
	IPv4       netip.Addr      `json:"ipv4,omitzero"`
	IPv6       netip.Addr      `json:"ipv6,omitzero"`
	MAC        string          `json:"mac,omitempty"`
	HostMAC    string          `json:"host-mac,omitempty"`
	// Which directions the programs enforce policy in (from the endpoint's
	// computed policy).
	IngressEnforced bool              `json:"ingress-enforced"`
	EgressEnforced  bool              `json:"egress-enforced"`
	Status          reconciler.Status `json:"status"`
}

func (e *EndpointMapEntry) Clone() *EndpointMapEntry { e2 := *e; return &e2 }

func (e *EndpointMapEntry) GetStatus() reconciler.Status { return e.Status }
func (e *EndpointMapEntry) SetStatus(s reconciler.Status) *EndpointMapEntry {
	e.Status = s
	return e
}

// SameDesired reports whether two entries ask the datapath for the same thing.
func (e *EndpointMapEntry) SameDesired(o *EndpointMapEntry) bool {
	return e.IfIndex == o.IfIndex && e.EndpointID == o.EndpointID && e.Identity == o.Identity &&
		e.IPv4 == o.IPv4 && e.IPv6 == o.IPv6 && e.MAC == o.MAC && e.HostMAC == o.HostMAC &&
		e.IngressEnforced == o.IngressEnforced && e.EgressEnforced == o.EgressEnforced
}

func (e *EndpointMapEntry) TableHeader() []string {
	return []string{"IfIndex", "Endpoint", "Identity", "IPv4", "IPv6", "Status"}
}
func (e *EndpointMapEntry) TableRow() []string {
	s := func(a netip.Addr) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	return []string{strconv.Itoa(int(e.IfIndex)), strconv.Itoa(int(e.EndpointID)),
		strconv.FormatUint(uint64(e.Identity), 10), s(e.IPv4), s(e.IPv6), e.Status.String()}
}

// EndpointMapIfIndexIndex is the primary index.
var EndpointMapIfIndexIndex = statedb.Index[*EndpointMapEntry, uint32]{
	Name:       "ifindex",
	FromObject: func(e *EndpointMapEntry) index.KeySet { return index.NewKeySet(index.Uint32(e.IfIndex)) },
	FromKey:    index.Uint32,
	FromString: index.Uint32String,
	Unique:     true,
}

// EndpointMapEndpointIndex finds the entry of an endpoint.
var EndpointMapEndpointIndex = statedb.Index[*EndpointMapEntry, uint16]{
	Name:       "endpoint",
	FromObject: func(e *EndpointMapEntry) index.KeySet { return index.NewKeySet(index.Uint16(e.EndpointID)) },
	FromKey:    index.Uint16,
	FromString: index.Uint16String,
}

func NewEndpointMapTable(db *statedb.DB) (statedb.RWTable[*EndpointMapEntry], error) {
	return statedb.NewTable(db, "bpf-endpoints", EndpointMapIfIndexIndex, EndpointMapEndpointIndex)
}
