package ipam

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/netip"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

// newRoutes provides the IPAM API:
//
//	POST   /v1/ipam       allocate (body: optional models.IPAMRequest) -> 201 models.IPAMResponse
//	DELETE /v1/ipam/{ip}  release -> 200 models.IPAMAllocation (what was released)
//	GET    /v1/ipam       list, sorted by IP; ?owner=X lists X's only
func newRoutes(m *IPAM) apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "POST /v1/ipam", Handler: apiserver.Handle(m.handleAllocate)},
		{Pattern: "DELETE /v1/ipam/{ip}", Handler: apiserver.Handle(m.handleRelease)},
		{Pattern: "GET /v1/ipam", Handler: apiserver.Handle(m.handleList)},
	}}
}

func (m *IPAM) handleAllocate(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var req models.IPAMRequest
	if err := decodeOptional(w, r, &req); err != nil {
		return nil, 0, err
	}
	fam, err := ParseFamily(req.Family)
	if err != nil {
		return nil, 0, apiError(err)
	}
	res, err := m.Allocate(req.Owner, req.Pod, fam)
	if err != nil {
		return nil, 0, apiError(err)
	}
	return &models.IPAMResponse{IPv4: res.IPv4.model(), IPv6: res.IPv6.model()}, http.StatusCreated, nil
}

func (m *IPAM) handleRelease(_ http.ResponseWriter, r *http.Request) (any, int, error) {
	s := r.PathValue("ip")
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "malformed IP address %q: %v", s, err)
	}
	a, err := m.Release(ip)
	if err != nil {
		return nil, 0, apiError(err)
	}
	return allocationModel(a), http.StatusOK, nil
}

func (m *IPAM) handleList(_ http.ResponseWriter, r *http.Request) (any, int, error) {
	rows := m.List(r.URL.Query().Get("owner"))
	out := make([]models.IPAMAllocation, 0, len(rows))
	for _, a := range rows {
		out = append(out, *allocationModel(a))
	}
	return out, http.StatusOK, nil
}

// decodeOptional decodes a JSON body into v with the API server's rules
// (size limit, unknown fields rejected), but accepts an empty body: a bare
// POST /v1/ipam allocates with no owner recorded.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, apiserver.MaxBodyBytes))
	if err != nil {
		if mbe := new(http.MaxBytesError); errors.As(err, &mbe) {
			return apiserver.Errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
		}
		return apiserver.Errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	return apiserver.DecodeJSON(w, r, v)
}

func apiError(err error) error {
	return apiserver.WithStatus(httpStatus(err), err)
}

func (a *Address) model() *models.IPAMAddress {
	if a == nil {
		return nil
	}
	return &models.IPAMAddress{
		IP:      a.IP.String(),
		Prefix:  a.CIDR.Bits(),
		Gateway: a.Gateway.String(),
		Cidr:    a.CIDR.String(),
	}
}

func allocationModel(a *tables.IPAMAllocation) *models.IPAMAllocation {
	return &models.IPAMAllocation{IP: a.IP.String(), Owner: a.Owner, Pod: a.Pod, Created: a.Created}
}
