package policy

import (
	"fmt"

	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// entitySelector selects the identities of an entity (fromEntities,
// toEntities). Entity "all" is not one: it is the wildcard peer
// (identity 0 in the policy map), never one entry per identity.
type entitySelector struct {
	entity policyapi.Entity
}

// entityReserved maps the entities that stand for one reserved identity.
var entityReserved = map[policyapi.Entity]tables.NumericIdentity{
	policyapi.EntityHost:          tables.IdentityHost,
	policyapi.EntityRemoteNode:    tables.IdentityRemoteNode,
	policyapi.EntityInit:          tables.IdentityInit,
	policyapi.EntityHealth:        tables.IdentityHealth,
	policyapi.EntityUnmanaged:     tables.IdentityUnmanaged,
	policyapi.EntityKubeAPIServer: tables.IdentityKubeAPIServer,
	policyapi.EntityIngress:       tables.IdentityIngress,
}

// clusterReserved are the reserved identities entity "cluster" selects
// besides every cluster identity (Cilium's definition).
var clusterReserved = map[tables.NumericIdentity]bool{
	tables.IdentityHost:       true,
	tables.IdentityRemoteNode: true,
	tables.IdentityInit:       true,
	tables.IdentityHealth:     true,
	tables.IdentityUnmanaged:  true,
}

func newEntitySelector(e policyapi.Entity) (*entitySelector, error) {
	switch e {
	case policyapi.EntityWorld, policyapi.EntityWorldIPv4, policyapi.EntityWorldIPv6, policyapi.EntityCluster:
	default:
		if _, ok := entityReserved[e]; !ok {
			return nil, fmt.Errorf("unknown entity %q", e)
		}
	}
	return &entitySelector{entity: e}, nil
}

func (s *entitySelector) key() string    { return "entity:" + string(s.entity) }
func (s *entitySelector) String() string { return s.key() }

func (s *entitySelector) matches(id *identityInfo) bool {
	switch s.entity {
	case policyapi.EntityWorld:
		// Everything outside the cluster: world and its per-family
		// variants, and every CIDR identity (more specific world).
		return id.id == tables.IdentityWorld || id.id == tables.IdentityWorldIPv4 ||
			id.id == tables.IdentityWorldIPv6 || id.kind == kindCIDR
	case policyapi.EntityWorldIPv4:
		return id.id == tables.IdentityWorldIPv4 || (id.kind == kindCIDR && id.prefix.Addr().Is4())
	case policyapi.EntityWorldIPv6:
		return id.id == tables.IdentityWorldIPv6 || (id.kind == kindCIDR && id.prefix.Addr().Is6())
	case policyapi.EntityCluster:
		return id.kind == kindCluster || clusterReserved[id.id]
	}
	return id.id == entityReserved[s.entity]
}
