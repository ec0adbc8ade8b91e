// Package client talks to the agent's REST API over its unix socket. The CNI
// plugin and the debug CLI both use it; errors carry the HTTP status so a
// caller can tell "not found" from "conflict" (errors.As with *APIError).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/membrane-net/membrane/api/models"
)

// DefaultSocket is the agent's socket unless --socket says otherwise.
const DefaultSocket = "/var/run/membrane/membrane.sock"

// SocketFromEnv returns $MEMBRANE_SOCKET or the default.
func SocketFromEnv() string {
	if s := os.Getenv("MEMBRANE_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// Client is an API client bound to one socket.
type Client struct {
	Socket string
	http   *http.Client
}

// New returns a client for the agent listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{Socket: socket, http: &http.Client{Transport: tr}}
}

// APIError is a non-2xx answer from the agent.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("agent: %s (HTTP %d)", e.Message, e.Code) }

// IsStatus reports whether err is an APIError with the given status code.
func IsStatus(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// ErrAgentUnreachable wraps failures to reach the socket at all.
var ErrAgentUnreachable = errors.New("agent unreachable")

// Do sends in (if not nil) as JSON and decodes the answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.DoRaw(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.DoRaw(ctx, method, path, "application/json", b, out)
}

// DoRaw sends body (if not nil) as is with the given Content-Type, for
// documents the caller does not encode itself (a policy file in YAML or
// JSON), and decodes the answer into out (if not nil) like Do.
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	resp, err := c.send(ctx, method, path, contentType, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return apiError(resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// Stream GETs path and returns the body of the answer as it arrives, for
// answers that never end by themselves (GET /v1/monitor streams one JSON
// document per line). It returns once the agent accepted the request; a
// non-2xx answer is an *APIError. Cancel ctx to end the stream; the caller
// closes the body.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(resp.StatusCode, data)
	}
	return resp.Body, nil
}

// send performs one request; failing to reach the socket at all is
// ErrAgentUnreachable.
func (c *Client) send(ctx context.Context, method, path, contentType string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://membrane"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		return nil, fmt.Errorf("%w at %s: %v (is membrane-agent running with --socket=%s?)",
			ErrAgentUnreachable, c.Socket, err, c.Socket)
	}
	return resp, nil
}

// apiError turns a non-2xx answer into an *APIError.
func apiError(code int, data []byte) error {
	var e models.Error
	if json.Unmarshal(data, &e) != nil || e.Message == "" {
		e.Message = string(bytes.TrimSpace(data))
	}
	return &APIError{Code: code, Message: e.Message}
}

// Get fetches path into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Raw returns the undecoded body of a GET (for /statedb/).
func (c *Client) Raw(ctx context.Context, path string) ([]byte, error) {
	var raw json.RawMessage
	err := c.Do(ctx, http.MethodGet, path, nil, &raw)
	return raw, err
}

// HTTPClient exposes the unix-socket transport (statedb remote tables).
func (c *Client) HTTPClient() *http.Client { return c.http }

// EndpointPath escapes an endpoint id ("7", "container-id:X", ...) into a path.
func EndpointPath(id string) string { return "/v1/endpoint/" + url.PathEscape(id) }

func (c *Client) PutEndpoint(ctx context.Context, id string, req *models.EndpointChangeRequest) (*models.Endpoint, error) {
	var ep models.Endpoint
	if err := c.Do(ctx, http.MethodPut, EndpointPath(id), req, &ep); err != nil {
		return nil, err
	}
	return &ep, nil
}

func (c *Client) GetEndpoint(ctx context.Context, id string) (*models.Endpoint, error) {
	var ep models.Endpoint
	if err := c.Get(ctx, EndpointPath(id), &ep); err != nil {
		return nil, err
	}
	return &ep, nil
}

func (c *Client) DeleteEndpoint(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, EndpointPath(id), nil, nil)
}

func (c *Client) ListEndpoints(ctx context.Context) ([]models.Endpoint, error) {
	var eps []models.Endpoint
	return eps, c.Get(ctx, "/v1/endpoint", &eps)
}

func (c *Client) EndpointLog(ctx context.Context, id string) ([]models.StatusEntry, error) {
	var log []models.StatusEntry
	return log, c.Get(ctx, EndpointPath(id)+"/log", &log)
}

func (c *Client) EndpointLabels(ctx context.Context, id string) (*models.EndpointLabels, error) {
	var l models.EndpointLabels
	return &l, c.Get(ctx, EndpointPath(id)+"/labels", &l)
}

func (c *Client) PatchEndpointLabels(ctx context.Context, id string, p *models.LabelsPatch) (*models.EndpointLabels, error) {
	var l models.EndpointLabels
	return &l, c.Do(ctx, http.MethodPatch, EndpointPath(id)+"/labels", p, &l)
}

func (c *Client) AllocateIP(ctx context.Context, req *models.IPAMRequest) (*models.IPAMResponse, error) {
	var r models.IPAMResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/ipam", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) ReleaseIP(ctx context.Context, ip string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/ipam/"+url.PathEscape(ip), nil, nil)
}

func (c *Client) ListIPs(ctx context.Context) ([]models.IPAMAllocation, error) {
	var r []models.IPAMAllocation
	return r, c.Get(ctx, "/v1/ipam", &r)
}

func (c *Client) ListIdentities(ctx context.Context) ([]models.Identity, error) {
	var r []models.Identity
	return r, c.Get(ctx, "/v1/identity", &r)
}

func (c *Client) GetIdentity(ctx context.Context, id string) (*models.Identity, error) {
	var r models.Identity
	return &r, c.Get(ctx, "/v1/identity/"+url.PathEscape(id), &r)
}

// podPath escapes a pod's namespace and name into its path.
func podPath(ns, name string) string {
	return "/v1/pod/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
}

func (c *Client) PutPod(ctx context.Context, p *models.Pod) (*models.Pod, error) {
	var r models.Pod
	return &r, c.Do(ctx, http.MethodPut, podPath(p.Namespace, p.Name), p, &r)
}

func (c *Client) GetPod(ctx context.Context, ns, name string) (*models.Pod, error) {
	var r models.Pod
	if err := c.Get(ctx, podPath(ns, name), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) DeletePod(ctx context.Context, ns, name string) error {
	return c.Do(ctx, http.MethodDelete, podPath(ns, name), nil, nil)
}

func (c *Client) ListPods(ctx context.Context) ([]models.Pod, error) {
	var r []models.Pod
	return r, c.Get(ctx, "/v1/pod", &r)
}

func (c *Client) Healthz(ctx context.Context) (*models.Status, error) {
	var s models.Status
	if err := c.Get(ctx, "/v1/healthz", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Runtime returns the agent process's goroutines, threads, open files and
// memory (GET /v1/debug/runtime).
func (c *Client) Runtime(ctx context.Context) (*models.Runtime, error) {
	var r models.Runtime
	if err := c.Get(ctx, "/v1/debug/runtime", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// RuntimeAfterGC is Runtime after the agent collected garbage
// (GET /v1/debug/runtime?gc=1): HeapBytes is then the live heap, what a
// memory figure per endpoint compares.
func (c *Client) RuntimeAfterGC(ctx context.Context) (*models.Runtime, error) {
	var r models.Runtime
	if err := c.Get(ctx, "/v1/debug/runtime?gc=1", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// StateDBDump returns the rows of one statedb table as the agent's
// /statedb/ handler dumps them ({"TABLE": [rows]}), or of every table if
// table is "".
func (c *Client) StateDBDump(ctx context.Context, table string) ([]byte, error) {
	path := "/statedb/dump"
	if table != "" {
		path += "/" + url.PathEscape(table)
	}
	return c.Raw(ctx, path)
}

// ShellSocket is the unix socket of the agent's live statedb shell (the
// shell cell, `membrane shell`): next to the API socket, named after it,
// so every agent's shell sits beside its API ("membrane.sock" ->
// "membrane-shell.sock").
func ShellSocket(apiSocket string) string {
	dir, base := filepath.Split(apiSocket)
	return filepath.Join(dir, strings.TrimSuffix(base, ".sock")+"-shell.sock")
}
