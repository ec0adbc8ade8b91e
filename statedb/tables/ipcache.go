package tables

import (
	"net/netip"
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// IPCacheEntry maps a prefix to the identity of whatever sits behind it.
// The loader reconciles the table into the pinned ipcache LPM map, which
// the datapath consults to learn a packet's peer identity.
type IPCacheEntry struct {
	Prefix   netip.Prefix    `json:"prefix"`
	Identity NumericIdentity `json:"identity"`
	// Source says who wrote it: "endpoint" (regeneration), "host" (host-ips),
	// "node" (node-routes: other nodes' addresses), "cidr-policy" (the
	// policy engine), "remote" (a pod of another node, from its
	// CiliumEndpoint: k8s-remote-endpoints).
	Source string `json:"source"`
	// EndpointID is the local endpoint behind the prefix (0 if none).
	EndpointID uint16 `json:"endpoint-id,omitempty"`
	// IfIndex is that endpoint's host-side veth (0 if none, or not known
	// yet): eBPF host routing redirects packets for the prefix to it.
	IfIndex uint32            `json:"ifindex,omitempty"`
	Status  reconciler.Status `json:"status"`
}

func (e *IPCacheEntry) Clone() *IPCacheEntry { e2 := *e; return &e2 }

func (e *IPCacheEntry) GetStatus() reconciler.Status { return e.Status }
func (e *IPCacheEntry) SetStatus(s reconciler.Status) *IPCacheEntry {
	e.Status = s
	return e
}

func (e *IPCacheEntry) TableHeader() []string {
	return []string{"Prefix", "Identity", "Source", "Endpoint", "Status"}
}
func (e *IPCacheEntry) TableRow() []string {
	return []string{e.Prefix.String(), strconv.FormatUint(uint64(e.Identity), 10), e.Source,
		strconv.Itoa(int(e.EndpointID)), e.Status.String()}
}

// IPCachePrefixIndex is the primary index.
var IPCachePrefixIndex = statedb.Index[*IPCacheEntry, netip.Prefix]{
	Name:       "prefix",
	FromObject: func(e *IPCacheEntry) index.KeySet { return index.NewKeySet(index.NetIPPrefix(e.Prefix)) },
	FromKey:    index.NetIPPrefix,
	FromString: index.NetIPPrefixString,
	Unique:     true,
}

// IPCacheEndpointIndex finds the entries of a local endpoint. Entries of
// no local endpoint (EndpointID 0: host, node, CIDR and remote rows) are
// not in it: nothing looks them up by endpoint, and at a cluster's scale
// the remote rows would cost a node of this index each.
var IPCacheEndpointIndex = statedb.Index[*IPCacheEntry, uint16]{
	Name: "endpoint",
	FromObject: func(e *IPCacheEntry) index.KeySet {
		if e.EndpointID == 0 {
			return index.NewKeySet()
		}
		return index.NewKeySet(index.Uint16(e.EndpointID))
	},
	FromKey:    index.Uint16,
	FromString: index.Uint16String,
}

func NewIPCacheTable(db *statedb.DB) (statedb.RWTable[*IPCacheEntry], error) {
	return statedb.NewTable(db, "ipcache", IPCachePrefixIndex, IPCacheEndpointIndex)
}
