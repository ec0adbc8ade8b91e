package client

import "github.com/membrane-net/membrane/statedb/tables"

// EndpointIdentities gives the identities the other nodes' endpoints
// use, from the one cache of their CiliumEndpoints the agent keeps (the
// remote endpoints cell's, for the ipcache). The identity garbage
// collector reads it instead of watching every CiliumEndpoint a second
// time, so each agent receives one watch event per pod change in the
// cluster, the collector's leader included.
type EndpointIdentities interface {
	// HasSynced reports whether the CiliumEndpoints have been listed.
	HasSynced() bool
	// AddIdentities sets used[id] for the identity of every cached
	// CiliumEndpoint.
	AddIdentities(used map[tables.NumericIdentity]bool)
}
