package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

// fakeAgent serves the slice of the agent's API the plugin uses, on a unix
// socket, with knobs to make it fail the way the real one can. The real
// agent is exercised by test/e2e; this one lets the plugin's error paths be
// tested one by one.
type fakeAgent struct {
	t      *testing.T
	Socket string
	srv    *http.Server

	mu     sync.Mutex
	pool   []netip.Addr // free addresses, in order
	router netip.Addr
	v6     bool
	ips    map[string]models.IPAMAllocation
	eps    map[uint16]*models.Endpoint
	nextID uint16
	// Requests are the endpoint change requests received, in order.
	Requests []models.EndpointChangeRequest

	// PutStatus, if set, answers PUT /v1/endpoint with this code. With
	// PutCreates the endpoint is stored before answering (an agent that
	// created it and then failed, or whose answer got lost).
	PutStatus  int
	PutCreates bool
	// PutState is the state stored endpoints get (default ready).
	PutState  models.EndpointState
	Unhealthy string
}

// newFakeAgent serves a pod CIDR of size addresses after the router
// (10.99.0.1 is the router, 10.99.0.2.. are handed out).
func newFakeAgent(t *testing.T, size int, v6 bool) *fakeAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbfake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeAgent{
		t:      t,
		Socket: filepath.Join(dir, "agent.sock"),
		router: netip.MustParseAddr("10.99.0.1"),
		v6:     v6,
		ips:    map[string]models.IPAMAllocation{},
		eps:    map[uint16]*models.Endpoint{},
		nextID: 100,
	}
	a := f.router.Next()
	for range size {
		f.pool = append(f.pool, a)
		a = a.Next()
	}
	f.start()
	t.Cleanup(f.Stop)
	return f
}

func (f *fakeAgent) start() {
	ln, err := net.Listen("unix", f.Socket)
	if err != nil {
		f.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ipam", f.allocate)
	mux.HandleFunc("DELETE /v1/ipam/{ip}", f.release)
	mux.HandleFunc("GET /v1/ipam", f.listIPs)
	mux.HandleFunc("PUT /v1/endpoint/{id}", f.putEndpoint)
	mux.HandleFunc("GET /v1/endpoint/{id}", f.getEndpoint)
	mux.HandleFunc("DELETE /v1/endpoint/{id}", f.deleteEndpoint)
	mux.HandleFunc("GET /v1/endpoint", f.listEndpoints)
	mux.HandleFunc("GET /v1/healthz", f.healthz)
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(ln)
}

// Stop makes the agent unreachable (the socket goes away).
func (f *fakeAgent) Stop() {
	if f.srv != nil {
		f.srv.Close()
		f.srv = nil
		os.Remove(f.Socket)
	}
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	reply(w, code, models.Error{Code: code, Message: fmt.Sprintf(format, args...)})
}

func (f *fakeAgent) allocate(w http.ResponseWriter, r *http.Request) {
	var req models.IPAMRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 400, "%v", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pool) == 0 {
		fail(w, 503, "no free address in 10.99.0.0/24")
		return
	}
	ip := f.pool[0]
	f.pool = f.pool[1:]
	f.ips[ip.String()] = models.IPAMAllocation{IP: ip.String(), Owner: req.Owner, Pod: req.Pod}
	resp := models.IPAMResponse{IPv4: &models.IPAMAddress{IP: ip.String(), Prefix: 24, Gateway: f.router.String(), Cidr: "10.99.0.0/24"}}
	if f.v6 {
		ip6 := netip.MustParseAddr(fmt.Sprintf("fd99::%x", ip.As4()[3]))
		f.ips[ip6.String()] = models.IPAMAllocation{IP: ip6.String(), Owner: req.Owner, Pod: req.Pod}
		resp.IPv6 = &models.IPAMAddress{IP: ip6.String(), Prefix: 64, Gateway: "fd99::1", Cidr: "fd99::/64"}
	}
	reply(w, 201, resp)
}

func (f *fakeAgent) release(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ip := r.PathValue("ip")
	if _, ok := f.ips[ip]; !ok {
		fail(w, 404, "%s is not allocated", ip)
		return
	}
	delete(f.ips, ip)
	if a := netip.MustParseAddr(ip); a.Is4() {
		f.pool = append(f.pool, a)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAgent) listIPs(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	owner := r.URL.Query().Get("owner")
	rows := []models.IPAMAllocation{}
	for _, a := range f.ips {
		if owner == "" || a.Owner == owner {
			rows = append(rows, a)
		}
	}
	reply(w, 200, rows)
}

// lookup resolves an endpoint id of the API ("7", "cni-attachment-id:C:I").
func (f *fakeAgent) lookup(id string) *models.Endpoint {
	if n, err := strconv.Atoi(id); err == nil {
		return f.eps[uint16(n)]
	}
	if rest, ok := strings.CutPrefix(id, "cni-attachment-id:"); ok {
		for _, ep := range f.eps {
			if ep.ContainerID+":"+ep.ContainerInterfaceName == rest {
				return ep
			}
		}
	}
	return nil
}

func (f *fakeAgent) putEndpoint(w http.ResponseWriter, r *http.Request) {
	var req models.EndpointChangeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(w, 400, "%v", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Requests = append(f.Requests, req)
	if r.PathValue("id") != "0" {
		fail(w, 400, "endpoint id must be 0")
		return
	}
	if f.PutStatus != 0 && !f.PutCreates {
		fail(w, f.PutStatus, "configured to fail with %d", f.PutStatus)
		return
	}
	if old := f.lookup("cni-attachment-id:" + req.ContainerID + ":" + req.ContainerInterfaceName); old != nil {
		fail(w, 409, "attachment %s:%s is held by endpoint %d", req.ContainerID, req.ContainerInterfaceName, old.ID)
		return
	}
	state := f.PutState
	if state == "" {
		state = models.StateReady
	}
	ep := &models.Endpoint{
		ID:                     f.nextID,
		State:                  state,
		ContainerID:            req.ContainerID,
		ContainerInterfaceName: req.ContainerInterfaceName,
		InterfaceName:          req.InterfaceName,
		InterfaceIndex:         int(req.InterfaceIndex),
		Mac:                    req.Mac,
		HostMac:                req.HostMac,
		NetworkNamespace:       req.NetworkNamespace,
		K8sNamespace:           req.K8sNamespace,
		K8sPodName:             req.K8sPodName,
		K8sUID:                 req.K8sUID,
		Addressing:             *req.Addressing,
	}
	f.nextID++
	f.eps[ep.ID] = ep
	if f.PutStatus != 0 {
		fail(w, f.PutStatus, "configured to fail with %d after creating endpoint %d", f.PutStatus, ep.ID)
		return
	}
	reply(w, 201, ep)
}

func (f *fakeAgent) getEndpoint(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep := f.lookup(r.PathValue("id"))
	if ep == nil {
		fail(w, 404, "endpoint %s not found", r.PathValue("id"))
		return
	}
	reply(w, 200, ep)
}

func (f *fakeAgent) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep := f.lookup(r.PathValue("id"))
	if ep == nil {
		fail(w, 404, "endpoint %s not found", r.PathValue("id"))
		return
	}
	delete(f.eps, ep.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAgent) listEndpoints(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	eps := []*models.Endpoint{}
	for _, ep := range f.eps {
		eps = append(eps, ep)
	}
	reply(w, 200, eps)
}

func (f *fakeAgent) healthz(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply(w, 200, models.Status{Healthy: f.Unhealthy == "", Message: f.Unhealthy})
}

// counts returns how many addresses and endpoints the agent holds.
func (f *fakeAgent) counts() (ips, eps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ips), len(f.eps)
}

func (f *fakeAgent) endpoint(att Attachment) *models.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ep := f.lookup(att.EndpointID()); ep != nil {
		c := *ep
		return &c
	}
	return nil
}

func (f *fakeAgent) setState(att Attachment, s models.EndpointState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep := f.lookup(att.EndpointID())
	if ep == nil {
		return errors.New("no such endpoint")
	}
	ep.State = s
	return nil
}
