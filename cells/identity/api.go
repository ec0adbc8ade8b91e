package identity

import (
	"net/http"
	"strconv"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

type apiParams struct {
	cell.In

	DB         *statedb.DB
	Identities statedb.Table[*tables.Identity]
	Endpoints  statedb.Table[*tables.Endpoint]
}

// newRoutes serves the identities table:
//
//	GET /v1/identity       every identity, by number, with its endpoint count
//	GET /v1/identity/{id}  one identity (400 if id is not a number, 404 if unknown)
func newRoutes(p apiParams) apiserver.RoutesOut {
	a := &api{p}
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/identity", Handler: apiserver.Handle(a.list)},
		{Pattern: "GET /v1/identity/{id}", Handler: apiserver.Handle(a.get)},
	}}
}

type api struct{ p apiParams }

func (a *api) list(w http.ResponseWriter, r *http.Request) (any, int, error) {
	txn := a.p.DB.ReadTxn()
	out := []models.Identity{}
	// The primary index orders by number.
	for ident := range a.p.Identities.All(txn) {
		out = append(out, a.model(txn, ident))
	}
	return out, http.StatusOK, nil
}

func (a *api) get(w http.ResponseWriter, r *http.Request) (any, int, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "invalid identity %q: want a number (e.g. 256; `membrane identity list` shows them)", s)
	}
	txn := a.p.DB.ReadTxn()
	ident, _, found := a.p.Identities.Get(txn, tables.IdentityIDIndex.Query(tables.NumericIdentity(id)))
	if !found {
		return nil, 0, apiserver.Errorf(http.StatusNotFound, "identity %d not found: no endpoint uses it (reserved identities are 1..%d, cluster identities %d..%d)",
			id, tables.IdentityWorldIPv6, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	}
	return a.model(txn, ident), http.StatusOK, nil
}

func (a *api) model(txn statedb.ReadTxn, ident *tables.Identity) models.Identity {
	n := 0
	for range a.p.Endpoints.List(txn, tables.EndpointIdentityIndex.Query(ident.ID)) {
		n++
	}
	return models.Identity{ID: ident.ID, Labels: ident.Labels.Strings(), Endpoints: n, Source: sourceOf(ident)}
}

// sourceOf names where an identity comes from (models.Identity.Source).
func sourceOf(ident *tables.Identity) string {
	switch {
	case ident.Reserved:
		return "reserved"
	case ident.ID&tables.LocalIdentityFlag != 0:
		return "cidr"
	case ident.Source != "":
		return ident.Source
	}
	return SourceLocal
}
