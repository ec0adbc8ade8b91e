package ipam

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors callers can test with errors.Is. The API answers them with the
// status noted.
var (
	// ErrExhausted: the pod CIDR has no free address (503).
	ErrExhausted = errors.New("pod CIDR exhausted")
	// ErrNotAllocated: release of an address nobody holds (404).
	ErrNotAllocated = errors.New("address not allocated")
	// ErrReserved: the router address cannot be allocated or released (400).
	ErrReserved = errors.New("address reserved")
	// ErrInvalid: a malformed request (400).
	ErrInvalid = errors.New("invalid IPAM request")
	// ErrFamilyNotConfigured: a family was asked for that has no CIDR (400).
	ErrFamilyNotConfigured = errors.New("address family not configured")
	// ErrNotReady: the allocations have not been loaded yet (503).
	ErrNotReady = errors.New("IPAM not ready")
)

func (p *pool) exhausted(used uint64) error {
	return fmt.Errorf("%w: no free %s address in %s (%s): %d of %d usable addresses in use, router %s reserved; "+
		"release addresses that are no longer needed (`membrane ipam list`, DELETE /v1/ipam/IP) or restart the agent with a wider range in %s",
		ErrExhausted, p.family, p.cidr, p.origin, used, p.usable, p.router, p.origin)
}

// httpStatus maps an IPAM error to the status the API answers with.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrExhausted), errors.Is(err, ErrNotReady):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrNotAllocated):
		return http.StatusNotFound
	case errors.Is(err, ErrReserved), errors.Is(err, ErrInvalid), errors.Is(err, ErrFamilyNotConfigured):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
