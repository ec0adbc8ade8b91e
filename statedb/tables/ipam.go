package tables

import (
	"net/netip"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
)

// IPAMAllocation is one address handed out from the node's pod CIDR.
type IPAMAllocation struct {
	IP netip.Addr `json:"ip"`
	// Owner is who asked for it (the CNI plugin: "container-id:ifname").
	Owner string `json:"owner"`
	// Pod is "namespace/name" if the owner said so.
	Pod     string    `json:"pod,omitempty"`
	Created time.Time `json:"created"`
}

func (a *IPAMAllocation) TableHeader() []string { return []string{"IP", "Owner", "Pod", "Created"} }
func (a *IPAMAllocation) TableRow() []string {
	return []string{a.IP.String(), a.Owner, a.Pod, a.Created.Format(time.RFC3339)}
}

// IPAMIPIndex is the primary index.
var IPAMIPIndex = statedb.Index[*IPAMAllocation, netip.Addr]{
	Name:       "ip",
	FromObject: func(a *IPAMAllocation) index.KeySet { return index.NewKeySet(index.NetIPAddr(a.IP)) },
	FromKey:    index.NetIPAddr,
	FromString: index.NetIPAddrString,
	Unique:     true,
}

// IPAMOwnerIndex finds the addresses of an owner.
var IPAMOwnerIndex = statedb.Index[*IPAMAllocation, string]{
	Name:       "owner",
	FromObject: func(a *IPAMAllocation) index.KeySet { return index.NewKeySet(index.String(a.Owner)) },
	FromKey:    index.String,
	FromString: index.FromString,
}

func NewIPAMTable(db *statedb.DB) (statedb.RWTable[*IPAMAllocation], error) {
	return statedb.NewTable(db, "ipam", IPAMIPIndex, IPAMOwnerIndex)
}
