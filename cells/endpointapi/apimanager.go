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
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// EndpointAPIManager is what the handlers hand requests to: it builds the
// endpoint with the creator, gives it to the endpoint manager (which
// rejects duplicates and merges the pod's labels) and, for sync builds,
// waits for the first regeneration. Errors carry the HTTP status to answer
// with.
type EndpointAPIManager struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.Table[*tables.Endpoint]
	manager   endpointManager
	cfg       Config
}

// CreateEndpoint handles PUT /v1/endpoint/{id}. pathID is "0" for a new
// endpoint; a non-zero number is an explicit ID the request asks for,
// which AddEndpoint refuses (409 naming the holder if it is in use, 400
// otherwise).
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
	ep, err = m.manager.AddEndpoint(ep)
	if err != nil {
		return nil, addStatus(err)
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
	last, err := m.waitForState(wctx, ep.ID, tables.StateReady, tables.StateInvalid)
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
	if _, rerr := m.manager.RemoveEndpoint(ep.ID, "sync build failed: "+why); rerr != nil && !goneAlready(rerr) {
		m.log.Error("removing endpoint after failed sync build", "id", ep.ID, "error", rerr)
	}
	return nil, apiserver.Errorf(code, "endpoint %d (%s) removed: %s", ep.ID, ep.CNIAttachmentID(), why)
}

// errDeletedWhileWaiting: the endpoint waitForState watched was deleted.
var errDeletedWhileWaiting = errors.New("endpoint deleted while waiting")

// waitForState blocks until endpoint id reaches one of the states, is
// deleted, or ctx ends, watching its row. It returns the row as last seen.
func (m *EndpointAPIManager) waitForState(ctx context.Context, id uint16, states ...tables.EndpointState) (*tables.Endpoint, error) {
	var last *tables.Endpoint
	for {
		ep, _, watch, ok := m.endpoints.GetWatch(m.db.ReadTxn(), tables.EndpointIDIndex.Query(id))
		if !ok {
			return last, fmt.Errorf("%w: %d", errDeletedWhileWaiting, id)
		}
		last = ep
		for _, s := range states {
			if ep.State == s {
				return ep, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-watch:
		}
	}
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
	q, err := parseEndpointID(id)
	if err != nil {
		return 0, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	var ids []uint16
	for ep := range m.endpoints.List(m.db.ReadTxn(), q) {
		ids = append(ids, ep.ID)
	}
	if len(ids) == 0 {
		return 0, apiserver.Errorf(http.StatusNotFound, "endpoint %s not found", id)
	}
	n := 0
	for _, epID := range ids {
		if _, err := m.manager.RemoveEndpoint(epID, "deleted through the API"); err == nil {
			n++
		} else if !goneAlready(err) {
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
	if err := checkRequestLabels(add); err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("add: %w", err))
	}
	ep, err := lookup(m.endpoints, m.db.ReadTxn(), id)
	if err != nil {
		return nil, err
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
		}
		return ep.Relabelled("labels changed: " + next.String())
	})
}

// syncBuildTimeoutDefault leaves room for the pod metadata wait (10s by
// default) and a slow first regeneration.
const syncBuildTimeoutDefault = 30 * time.Second
