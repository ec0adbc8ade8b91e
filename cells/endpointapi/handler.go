package endpointapi

import (
	"net/http"
	"slices"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/statedb/tables"
)

// handlers are the HTTP side of the endpoint API: rate limit, decode,
// validate the shape, hand over to the EndpointAPIManager, encode.
type handlers struct {
	db         *statedb.DB
	mgr        *EndpointAPIManager
	endpoints  *endpointmanager.EndpointManager
	identities statedb.Table[*tables.Identity]
	create     *apiLimiter
	delete     *apiLimiter
}

func (h *handlers) routes() apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/endpoint", Handler: apiserver.Handle(h.list)},
		{Pattern: "DELETE /v1/endpoint", Handler: apiserver.Handle(h.deleteBatch)},
		{Pattern: "PUT /v1/endpoint/{id}", Handler: apiserver.Handle(h.put)},
		{Pattern: "GET /v1/endpoint/{id}", Handler: apiserver.Handle(h.get)},
		{Pattern: "DELETE /v1/endpoint/{id}", Handler: apiserver.Handle(h.del)},
		{Pattern: "GET /v1/endpoint/{id}/log", Handler: apiserver.Handle(h.log)},
		{Pattern: "GET /v1/endpoint/{id}/labels", Handler: apiserver.Handle(h.getLabels)},
		{Pattern: "PATCH /v1/endpoint/{id}/labels", Handler: apiserver.Handle(h.patchLabels)},
		{Pattern: "GET /v1/endpoint/{id}/healthz", Handler: apiserver.Handle(h.healthz)},
	}}
}

func (h *handlers) put(w http.ResponseWriter, r *http.Request) (any, int, error) {
	release, err := h.create.wait(r.Context())
	if err != nil {
		return nil, 0, err
	}
	defer release()
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

func (h *handlers) lookup(r *http.Request) (*tables.Endpoint, statedb.ReadTxn, error) {
	txn := h.db.ReadTxn()
	ep, err := h.endpoints.Lookup(txn, r.PathValue("id"))
	if err != nil {
		return nil, nil, lookupStatus(err)
	}
	return ep, txn, nil
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ep, txn, err := h.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	return h.toModel(txn, ep), http.StatusOK, nil
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) (any, int, error) {
	txn := h.db.ReadTxn()
	out := []*models.Endpoint{}
	iter := h.endpoints.Endpoints().All(txn)
	if cid := r.URL.Query().Get("container-id"); cid != "" {
		iter = h.endpoints.Endpoints().List(txn, tables.EndpointContainerIndex.Query(cid))
	}
	for ep := range iter {
		out = append(out, h.toModel(txn, ep))
	}
	slices.SortFunc(out, func(a, b *models.Endpoint) int { return int(a.ID) - int(b.ID) })
	return out, http.StatusOK, nil
}

func (h *handlers) del(w http.ResponseWriter, r *http.Request) (any, int, error) {
	release, err := h.delete.wait(r.Context())
	if err != nil {
		return nil, 0, err
	}
	defer release()
	if _, err := h.mgr.DeleteEndpoints(r.PathValue("id")); err != nil {
		return nil, 0, err
	}
	return nil, http.StatusNoContent, nil
}

func (h *handlers) deleteBatch(w http.ResponseWriter, r *http.Request) (any, int, error) {
	release, err := h.delete.wait(r.Context())
	if err != nil {
		return nil, 0, err
	}
	defer release()
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

func (h *handlers) log(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ep, _, err := h.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	return statusLogModel(ep.Log), http.StatusOK, nil
}

// labelsOf reports an endpoint's labels; the security labels are those of
// its identity (the allocator applied the label filter to get them).
func (h *handlers) labelsOf(ep *tables.Endpoint) *models.EndpointLabels {
	out := &models.EndpointLabels{
		Requested: append([]string{}, ep.RequestLabels.Strings()...),
		Pod:       append([]string{}, ep.PodLabels.Strings()...),
		Security:  []string{},
	}
	if id, _, ok := h.identities.Get(h.db.ReadTxn(), tables.IdentityIDIndex.Query(ep.Identity)); ok && ep.Identity != 0 {
		out.Security = id.Labels.Strings()
	}
	return out
}

func (h *handlers) getLabels(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ep, _, err := h.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	return h.labelsOf(ep), http.StatusOK, nil
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
	return h.labelsOf(ep), http.StatusOK, nil
}

func (h *handlers) healthz(w http.ResponseWriter, r *http.Request) (any, int, error) {
	ep, _, err := h.lookup(r)
	if err != nil {
		return nil, 0, err
	}
	return &models.EndpointHealth{State: models.EndpointState(ep.State), Healthy: ep.State == tables.StateReady, Message: lastMessage(ep)}, http.StatusOK, nil
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
