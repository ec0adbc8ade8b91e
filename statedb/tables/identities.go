package tables

import (
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/membrane-net/membrane/labels"
)

// NumericIdentity is the number policy is written against in the datapath.
type NumericIdentity = uint32

// Reserved identities: the agent defines them, they always exist.
const (
	IdentityUnknown       NumericIdentity = 0
	IdentityHost          NumericIdentity = 1
	IdentityWorld         NumericIdentity = 2
	IdentityUnmanaged     NumericIdentity = 3
	IdentityHealth        NumericIdentity = 4
	IdentityInit          NumericIdentity = 5
	IdentityRemoteNode    NumericIdentity = 6
	IdentityKubeAPIServer NumericIdentity = 7
	IdentityIngress       NumericIdentity = 8
	IdentityWorldIPv4     NumericIdentity = 9
	IdentityWorldIPv6     NumericIdentity = 10

	// Cluster identities are allocated for endpoint label sets.
	MinClusterIdentity NumericIdentity = 256
	MaxClusterIdentity NumericIdentity = 65535

	// LocalIdentityFlag marks node-local identities (CIDR peers): 1<<24 | n.
	LocalIdentityFlag NumericIdentity = 1 << 24
)

// ReservedIdentities maps each reserved identity to its name (its label is
// reserved:NAME).
var ReservedIdentities = map[NumericIdentity]string{
	IdentityHost:          "host",
	IdentityWorld:         "world",
	IdentityUnmanaged:     "unmanaged",
	IdentityHealth:        "health",
	IdentityInit:          "init",
	IdentityRemoteNode:    "remote-node",
	IdentityKubeAPIServer: "kube-apiserver",
	IdentityIngress:       "ingress",
	IdentityWorldIPv4:     "world-ipv4",
	IdentityWorldIPv6:     "world-ipv6",
}

// Identity is a numeric identity and the security labels it stands for.
// How many endpoints use it is not stored: it is the number of rows in the
// endpoints table with this identity or datapath identity
// (EndpointIdentityIndex), so it cannot drift.
type Identity struct {
	ID     NumericIdentity `json:"id"`
	Labels labels.Labels   `json:"labels"`
	// Reserved identities are never released.
	Reserved bool `json:"reserved,omitempty"`
	// Source says where a cluster identity lives: "local" (this agent's
	// allocator, identities.json) or "cluster" (a CiliumIdentity object,
	// Kubernetes mode). Empty for reserved and CIDR identities.
	Source string `json:"source,omitempty"`
}

func (i *Identity) TableHeader() []string { return []string{"ID", "Labels", "Reserved"} }
func (i *Identity) TableRow() []string {
	return []string{strconv.FormatUint(uint64(i.ID), 10), i.Labels.String(), strconv.FormatBool(i.Reserved)}
}

// IdentityIDIndex is the primary index.
var IdentityIDIndex = statedb.Index[*Identity, NumericIdentity]{
	Name:       "id",
	FromObject: func(i *Identity) index.KeySet { return index.NewKeySet(index.Uint32(i.ID)) },
	FromKey:    index.Uint32,
	FromString: index.Uint32String,
	Unique:     true,
}

// IdentityLabelsIndex finds an identity by its canonical labels string.
var IdentityLabelsIndex = statedb.Index[*Identity, string]{
	Name:       "labels",
	FromObject: func(i *Identity) index.KeySet { return index.NewKeySet(index.String(i.Labels.String())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

func NewIdentitiesTable(db *statedb.DB) (statedb.RWTable[*Identity], error) {
	return statedb.NewTable(db, "identities", IdentityIDIndex, IdentityLabelsIndex)
}
