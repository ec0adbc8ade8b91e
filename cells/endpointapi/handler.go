package endpointapi

import (
	"net/http"
	"slices"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

// handlers are the HTTP side of the endpoint API: rate limit, decode,
// validate the shape, hand over to the EndpointAPIManager, encode. Reads
// come straight from the endpoints table.
type handlers struct {
	db         *statedb.DB
	mgr        *EndpointAPIManager
	endpoints  statedb.Table[*tables.Endpoint]
	identities statedb.Table[*tables.Identity]
	create     *apiLimiter
	delete     *apiLimiter
}

// handlerFunc is what apiserver.Handle serves.
type handlerFunc = func(w http.ResponseWriter, r *http.Request) (any, int, error)

func (h *handlers) routes() apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/endpoint", Handler: apiserver.Handle(h.list)},
		{Pattern: "DELETE /v1/endpoint", Handler: apiserver.Handle(h.delete.limit(h.deleteBatch))},
		{Pattern: "PUT /v1/endpoint/{id}", Handler: apiserver.Handle(h.create.limit(h.put))},
		{Pattern: "GET /v1/endpoint/{id}", Handler: apiserver.Handle(show(h, h.toModel))},
		{Pattern: "DELETE /v1/endpoint/{id}", Handler: apiserver.Handle(h.delete.limit(h.del))},
		{Pattern: "GET /v1/endpoint/{id}/log", Handler: apiserver.Handle(show(h, logModel))},
		{Pattern: "GET /v1/endpoint/{id}/labels", Handler: apiserver.Handle(show(h, h.labelsOf))},
		{Pattern: "PATCH /v1/endpoint/{id}/labels", Handler: apiserver.Handle(h.patchLabels)},
		{Pattern: "GET /v1/endpoint/{id}/healthz", Handler: apiserver.Handle(show(h, healthModel))},
	}}
}

// show answers a GET of the endpoint {id} names with what model makes of
// it, read in one transaction.
func show[T any](h *handlers, model func(txn statedb.ReadTxn, ep *tables.Endpoint) T) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, int, error) {
		txn := h.db.ReadTxn()
		ep, err := lookup(h.endpoints, txn, r.PathValue("id"))
		if err != nil {
			return nil, 0, err
		}
		return model(txn, ep), http.StatusOK, nil
	}
}

func (h *handlers) put(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var req models.EndpointChangeRequest
	if err := apiserver.DecodeJSON(w, r, &req); err != nil {
		return nil, 0, err
	}
	ep, err := h.mgr.CreateEndpoint(r.Context(), r.PathValue("id"), &req)
	if err != nil {
		return nil, 0, err
	}
	return h.toModel(h.db.ReadTxn(), ep), http.StatusCreated, nil
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) (any, int, error) {
	txn := h.db.ReadTxn()
	out := []*models.Endpoint{}
	iter := h.endpoints.All(txn)
	if cid := r.URL.Query().Get("container-id"); cid != "" {
		iter = h.endpoints.List(txn, tables.EndpointContainerIndex.Query(cid))
	}
	for ep := range iter {
		out = append(out, h.toModel(txn, ep))
	}
	slices.SortFunc(out, func(a, b *models.Endpoint) int { return int(a.ID) - int(b.ID) })
	return out, http.StatusOK, nil
}

func (h *handlers) del(w http.ResponseWriter, r *http.Request) (any, int, error) {
	if _, err := h.mgr.DeleteEndpoints(r.PathValue("id")); err != nil {
		return nil, 0, err
	}
	return nil, http.StatusNoContent, nil
}

func (h *handlers) deleteBatch(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var req models.EndpointBatchDeleteRequest
	if err := apiserver.DecodeJSON(w, r, &req); err != nil {
		return nil, 0, err
	}
	if req.ContainerID == "" {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "container-id is required")
	}
	n, err := h.mgr.DeleteEndpoints("container-id:" + req.ContainerID)
	if err != nil {
		return nil, 0, err
	}
	return models.EndpointBatchDeleteResponse{Deleted: n}, http.StatusOK, nil
}

func logModel(_ statedb.ReadTxn, ep *tables.Endpoint) []models.StatusEntry {
	return statusLogModel(ep.Log)
}

func healthModel(_ statedb.ReadTxn, ep *tables.Endpoint) *models.EndpointHealth {
	return &models.EndpointHealth{State: models.EndpointState(ep.State), Healthy: ep.State == tables.StateReady, Message: lastMessage(ep)}
}

// labelsOf reports an endpoint's labels; the security labels are those of
// its identity (the allocator applied the label filter to get them).
func (h *handlers) labelsOf(txn statedb.ReadTxn, ep *tables.Endpoint) *models.EndpointLabels {
	out := &models.EndpointLabels{
		Requested: append([]string{}, ep.RequestLabels.Strings()...),
		Pod:       append([]string{}, ep.PodLabels.Strings()...),
		Security:  []string{},
	}
	if id, _, ok := h.identities.Get(txn, tables.IdentityIDIndex.Query(ep.Identity)); ok && ep.Identity != 0 {
		out.Security = id.Labels.Strings()
	}
	return out
}

func (h *handlers) patchLabels(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var patch models.LabelsPatch
	if err := apiserver.DecodeJSON(w, r, &patch); err != nil {
		return nil, 0, err
	}
	ep, err := h.mgr.PatchLabels(r.PathValue("id"), &patch)
	if err != nil {
		return nil, 0, err
	}
	return h.labelsOf(h.db.ReadTxn(), ep), http.StatusOK, nil
}

// toModel renders a row as the API's Endpoint, with its identity's labels.
func (h *handlers) toModel(txn statedb.ReadTxn, ep *tables.Endpoint) *models.Endpoint {
	out := &models.Endpoint{
		ID:                     ep.ID,
		State:                  models.EndpointState(ep.State),
		ContainerID:            ep.ContainerID,
		ContainerInterfaceName: ep.ContainerIfName,
		InterfaceName:          ep.HostIfName,
		InterfaceIndex:         ep.HostIfIndex,
		Mac:                    ep.MAC,
		HostMac:                ep.HostMAC,
		NetnsCookie:            ep.NetnsCookie,
		NetworkNamespace:       ep.Netns,
		K8sNamespace:           ep.K8sNamespace,
		K8sPodName:             ep.K8sPodName,
		K8sUID:                 ep.K8sUID,
		Labels:                 append([]string{}, ep.Labels().Strings()...),
		PolicyRevision:         ep.PolicyRevision,
		Created:                ep.Created,
		Status:                 statusLogModel(ep.Log),
	}
	if ep.IPv4.IsValid() {
		out.Addressing.IPv4 = ep.IPv4.String()
	}
	if ep.IPv6.IsValid() {
		out.Addressing.IPv6 = ep.IPv6.String()
	}
	if ep.Identity != 0 {
		id := &models.Identity{ID: ep.Identity, Labels: []string{}}
		if row, _, ok := h.identities.Get(txn, tables.IdentityIDIndex.Query(ep.Identity)); ok {
			id.Labels = row.Labels.Strings()
		}
		out.Identity = id
	}
	return out
}

// statusLogModel renders an endpoint's status log for the API (never nil,
// so an empty log is [] on the wire).
func statusLogModel(log []tables.StatusEntry) []models.StatusEntry {
	out := make([]models.StatusEntry, 0, len(log))
	for _, e := range log {
		out = append(out, models.StatusEntry{Timestamp: e.Timestamp, State: models.EndpointState(e.State), Code: e.Code, Message: e.Message})
	}
	return out
}
