package endpointapi

import (
	"errors"
	"net/http"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/statedb/tables"
)

// endpointManager is what the endpoint API needs of the endpoint manager:
// the writes of the request path. It is the one place a cell calls another
// (docs/architecture.md), because a request needs its answer now: the new
// ID, or a 409 naming the endpoint that holds the address. Everything the
// API reads (lookups, lists, the sync-build wait) it reads from the
// endpoints table, as any other cell does.
//
// *endpointmanager.EndpointManager satisfies it; cell.go hands it over.
// This file and cell.go are where endpointapi names the endpoint manager:
// the interface, the manager's errors and its ID range.
type endpointManager interface {
	// AddEndpoint gives a new endpoint (ID 0) its ID and inserts it. It
	// fails with a *endpointmanager.DuplicateError if another endpoint
	// holds the ID, CNI attachment or an address, and with
	// endpointmanager.ErrIDAlreadySet for any other non-zero ID.
	AddEndpoint(ep *tables.Endpoint) (*tables.Endpoint, error)
	// RemoveEndpoint deletes endpoint id; endpointmanager.ErrNotFound if
	// it is gone.
	RemoveEndpoint(id uint16, why string) (*tables.Endpoint, error)
	// Update stores what fn makes of a clone of endpoint id's row, in one
	// write transaction; fn's error aborts it.
	Update(id uint16, fn func(ep *tables.Endpoint) error) (*tables.Endpoint, error)
}

var _ endpointManager = (*endpointmanager.EndpointManager)(nil)

// The endpoint IDs the manager gives.
const (
	minEndpointID = endpointmanager.MinEndpointID
	maxEndpointID = endpointmanager.MaxEndpointID
)

// addStatus gives AddEndpoint's refusals their status: 409 for what
// another endpoint holds (the message names it), 400 for an ID the
// request may not choose.
func addStatus(err error) error {
	var dup *endpointmanager.DuplicateError
	switch {
	case errors.As(err, &dup):
		return apiserver.WithStatus(http.StatusConflict, err)
	case errors.Is(err, endpointmanager.ErrIDAlreadySet):
		return apiserver.WithStatus(http.StatusBadRequest, err)
	}
	return err
}

// goneAlready reports whether the manager found no endpoint to remove:
// someone else removed it first.
func goneAlready(err error) bool { return errors.Is(err, endpointmanager.ErrNotFound) }
