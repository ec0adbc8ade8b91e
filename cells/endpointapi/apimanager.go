package endpointapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// EndpointAPIManager is what the handlers hand requests to: it builds the
// endpoint with the creator, rejects duplicates, merges the pod's labels,
// gives the endpoint to the endpoint manager and, for sync builds, waits
// for the first regeneration. Errors carry the HTTP status to answer with.
type EndpointAPIManager struct {
	log     *slog.Logger
	db      *statedb.DB
	pods    statedb.Table[*tables.Pod]
	manager *endpointmanager.EndpointManager
	cfg     Config
}

// CreateEndpoint handles PUT /v1/endpoint/{id}. pathID is "0" for a new
// endpoint; a non-zero number is an explicit ID the request asks for.
func (m *EndpointAPIManager) CreateEndpoint(ctx context.Context, pathID string, req *models.EndpointChangeRequest) (*tables.Endpoint, error) {
	if n, err := strconv.ParseInt(pathID, 10, 64); err != nil {
		return nil, apiserver.Errorf(http.StatusBadRequest,
			"PUT /v1/endpoint/%s: the ID of an endpoint to create must be a number (0: the agent assigns one)", pathID)
	} else if req.ID == 0 {
		req.ID = n
	} else if req.ID != n {
		return nil, apiserver.Errorf(http.StatusBadRequest, "endpoint ID %d in the path differs from id %d in the body", n, req.ID)
	}

	ep, err := NewEndpointFromChangeModel(req)
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("invalid endpoint: %w", err))
	}
	// Only a request naming an explicit ID can collide here: new endpoints
	// carry ID 0 until the endpoint manager gives them one. AddEndpoint
	// refuses such an ID anyway; checking first answers 409 for an ID in
	// use rather than the 400 for "IDs are not yours to choose".
	if err := m.manager.CheckDuplicates(ep); err != nil {
		return nil, apiserver.WithStatus(http.StatusConflict, err)
	}
	// Merge the pod's labels now if the pod is already known, so the
	// common case needs no extra round through the pod labels controller.
	if ep.K8sPodName != "" {
		if pod, _, ok := m.pods.Get(m.db.ReadTxn(), tables.PodKeyIndex.Query(ep.PodName())); ok {
			ep.PodLabels, ep.LabelsResolved = endpointmanager.PodLabels(pod), true
			if ep.K8sUID == "" {
				ep.K8sUID = pod.UID
			}
		}
	}

	ep, err = m.manager.AddEndpoint(ep)
	var dup *endpointmanager.DuplicateError
	switch {
	case errors.As(err, &dup):
		return nil, apiserver.WithStatus(http.StatusConflict, err)
	case errors.Is(err, endpointmanager.ErrIDAlreadySet):
		return nil, apiserver.WithStatus(http.StatusBadRequest, err)
	case err != nil:
		return nil, err
	}
	if !req.SyncBuildEndpoint {
		return ep, nil
	}
	return m.waitReady(ctx, ep)
}

// waitReady waits, bounded by --sync-build-timeout, for the endpoint's
// first regeneration. An endpoint that does not make it is removed, so a
// failed ADD leaves nothing behind.
func (m *EndpointAPIManager) waitReady(ctx context.Context, ep *tables.Endpoint) (*tables.Endpoint, error) {
	wctx, cancel := context.WithTimeout(ctx, m.cfg.SyncBuildTimeout)
	defer cancel()
	last, err := m.manager.WaitForState(wctx, ep.ID, tables.StateReady, tables.StateInvalid)
	if err == nil && last.State == tables.StateReady {
		return last, nil
	}
	why := "deleted while building"
	code := http.StatusInternalServerError
	switch {
	case err == nil: // invalid
		why = lastMessage(last)
		code = http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		why = fmt.Sprintf("not ready after %s (state %s: %s)", m.cfg.SyncBuildTimeout, last.State, lastMessage(last))
		code = http.StatusGatewayTimeout
	case ctx.Err() != nil:
		why = "the client went away while the endpoint was being built"
	}
	if _, rerr := m.manager.RemoveEndpoint(ep.ID, "sync build failed: "+why); rerr != nil && !errors.Is(rerr, endpointmanager.ErrNotFound) {
		m.log.Error("removing endpoint after failed sync build", "id", ep.ID, "error", rerr)
	}
	return nil, apiserver.Errorf(code, "endpoint %d (%s) removed: %s", ep.ID, ep.CNIAttachmentID(), why)
}

func lastMessage(ep *tables.Endpoint) string {
	if ep == nil || len(ep.Log) == 0 {
		return "no status"
	}
	return ep.Log[len(ep.Log)-1].Message
}

// DeleteEndpoints removes the endpoints an ID form selects (a container ID
// may select several).
func (m *EndpointAPIManager) DeleteEndpoints(id string) (int, error) {
	q, err := endpointmanager.ParseEndpointID(id)
	if err != nil {
		return 0, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	var ids []uint16
	for ep := range m.manager.Endpoints().List(m.db.ReadTxn(), q) {
		ids = append(ids, ep.ID)
	}
	if len(ids) == 0 {
		return 0, apiserver.Errorf(http.StatusNotFound, "endpoint %s not found", id)
	}
	n := 0
	for _, epID := range ids {
		if _, err := m.manager.RemoveEndpoint(epID, "deleted through the API"); err == nil {
			n++
		} else if !errors.Is(err, endpointmanager.ErrNotFound) {
			return n, err
		}
	}
	return n, nil
}

// PatchLabels adds and removes request labels of an endpoint; its
// identity follows.
func (m *EndpointAPIManager) PatchLabels(id string, patch *models.LabelsPatch) (*tables.Endpoint, error) {
	add, err := labels.ParseList(patch.Add, labels.DefaultSource)
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("add: %w", err))
	}
	del, err := labels.ParseList(patch.Delete, labels.DefaultSource)
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("delete: %w", err))
	}
	for _, l := range add {
		if l.Source == labels.SourceReserved {
			return nil, apiserver.Errorf(http.StatusBadRequest, "add: %q: reserved labels are the agent's to give", l)
		}
	}
	ep, err := m.manager.Lookup(m.db.ReadTxn(), id)
	if err != nil {
		return nil, lookupStatus(err)
	}
	return m.manager.Update(ep.ID, func(ep *tables.Endpoint) error {
		var kept labels.Labels
		for _, l := range ep.RequestLabels {
			if !del.Has(l) && !del.Has(labels.Label{Source: l.Source, Key: l.Key}) {
				kept = append(kept, l)
			}
		}
		next := labels.Merge(kept, add)
		if next.Equal(ep.RequestLabels) {
			return nil
		}
		ep.RequestLabels = next
		switch ep.State {
		case tables.StateDisconnecting, tables.StateDisconnected, tables.StateInvalid:
			return apiserver.Errorf(http.StatusConflict, "endpoint %d is %s", ep.ID, ep.State)
		case tables.StateWaitingForIdentity, tables.StateRestoring:
			ep.AddLog("ok", "labels changed: "+next.String())
			return nil
		}
		return ep.SetState(tables.StateWaitingForIdentity, "labels changed: "+next.String())
	})
}

func lookupStatus(err error) error {
	switch {
	case errors.Is(err, endpointmanager.ErrInvalidID):
		return apiserver.WithStatus(http.StatusBadRequest, err)
	case errors.Is(err, endpointmanager.ErrNotFound):
		return apiserver.WithStatus(http.StatusNotFound, err)
	}
	return err
}

// syncBuildTimeoutDefault leaves room for the pod metadata wait (10s by
// default) and a slow first regeneration.
const syncBuildTimeoutDefault = 30 * time.Second
