package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// How the plugin turns the agent's answers into CNI errors. The real-agent
// tests (plugin_test.go) provoke what the agent can be made to answer;
// these tables also hold what it cannot: a 500, an unhealthy /v1/healthz,
// an endpoint caught while not ready.

const sock = "/run/test/agent.sock"

// Errors as the client returns them.
var (
	errUnreachable = fmt.Errorf("%w at %s: dial unix %s: connect: no such file or directory", client.ErrAgentUnreachable, sock, sock)
	errDeadline    = fmt.Errorf("PUT /v1/endpoint/0: %w", context.DeadlineExceeded)
)

func apiErr(code int, msg string) error { return &client.APIError{Code: code, Message: msg} }

// A failed PUT of the endpoint: what the user reads, the code the runtime
// sees, and whether the rollback must look for an endpoint the agent may
// have made all the same.
func TestPutEndpointError(t *testing.T) {
	att := Attachment{ContainerID: "c1", IfName: "eth0"}
	for _, tc := range []struct {
		name     string
		err      error
		code     uint
		want     string
		mayExist bool // the rollback must look for the endpoint
	}{
		{"duplicate", apiErr(409, "CNI attachment c1:eth0 is already in use by endpoint 7"), types.ErrInternal,
			"already has an endpoint for this attachment or address: agent: CNI attachment c1:eth0 is already in use by endpoint 7 (HTTP 409) " +
				"(if that pod is gone, DEL it or run `membrane endpoint delete cni-attachment-id:c1:eth0`)", false},
		{"invalid", apiErr(400, "endpoint 7 removed: pod default/web is not known"), types.ErrInternal,
			"agent: endpoint 7 removed: pod default/web is not known (HTTP 400)", false},
		{"rate limited", apiErr(429, "endpoint create rate limited"), types.ErrTryAgainLater,
			"membrane-agent is rate limiting endpoint changes, retry later", false},
		{"sync build timeout", apiErr(504, "endpoint 7 removed: not ready after 30s"), types.ErrTryAgainLater,
			"membrane-agent timed out building the endpoint (see `membrane endpoint log` and the agent's log)", true},
		// The agent created the endpoint and then failed: the real agent
		// has no such path, but a 5xx may come from one that does.
		{"created then failed", apiErr(500, "saving endpoint 7: disk full"), types.ErrInternal,
			"agent: saving endpoint 7: disk full (HTTP 500)", true},
		{"agent down", errUnreachable, types.ErrTryAgainLater,
			"membrane-agent not reachable at " + sock + ": is it running?", true},
		{"no answer in time", errDeadline, types.ErrTryAgainLater,
			"membrane-agent at " + sock + " did not answer in time", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := putEndpointError(sock, att, tc.err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should contain %q", err, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error %q does not wrap the agent's %q", err, tc.err)
			}
			if CodeOf(err) != tc.code {
				t.Errorf("CNI code %d, want %d", CodeOf(err), tc.code)
			}
			if endpointMayExist(tc.err) != tc.mayExist {
				t.Errorf("endpointMayExist = %v, want %v", !tc.mayExist, tc.mayExist)
			}
		})
	}
}

func TestAllocateError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code uint
		want string
	}{
		{"exhausted", apiErr(503, "pod CIDR exhausted"), types.ErrInternal,
			"no free address in the agent's pod CIDR: agent: pod CIDR exhausted (HTTP 503) " +
				"(delete unused pods or give membrane-agent a larger --pod-cidr)"},
		{"agent down", errUnreachable, types.ErrTryAgainLater, "membrane-agent not reachable at " + sock},
		{"bad request", apiErr(400, "owner: invalid"), types.ErrInternal, "agent: owner: invalid (HTTP 400)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := allocateError(sock, tc.err)
			if !strings.Contains(err.Error(), tc.want) || CodeOf(err) != tc.code {
				t.Errorf("code %d, error %q; want code %d and %q", CodeOf(err), err, tc.code, tc.want)
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   *models.Status
		err  error
		want string // "" for no error
	}{
		{"healthy", &models.Status{Healthy: true}, nil, ""},
		{"unhealthy", &models.Status{Message: "ipam: degraded"}, nil,
			"membrane-cni STATUS: membrane-agent at " + sock + " is not healthy: ipam: degraded (see `membrane status`)"},
		{"unhealthy without a reason", &models.Status{}, nil, "is not healthy: no reason given"},
		{"agent down", nil, errUnreachable, "membrane-cni STATUS: membrane-agent not reachable at " + sock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := statusError(sock, tc.st, tc.err)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if CodeOf(err) != ErrPluginNotAvailable || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("code %d, error %q; want code %d and %q", CodeOf(err), err, ErrPluginNotAvailable, tc.want)
			}
		})
	}
}

func TestEndpointDrift(t *testing.T) {
	ips := []*current.IPConfig{{Address: net.IPNet{IP: net.ParseIP("10.99.0.2").To4(), Mask: net.CIDRMask(32, 32)}}}
	for _, tc := range []struct {
		name  string
		state models.EndpointState
		ipv4  string
		want  string // "" for no drift
	}{
		{"ready", models.StateReady, "10.99.0.2", ""},
		{"regenerating", models.StateRegenerating, "10.99.0.2", "endpoint 7 is regenerating, not ready (see `membrane endpoint log 7`)"},
		{"other address", models.StateReady, "10.99.0.3", `endpoint 7 has addresses "10.99.0.3"/"", prevResult says 10.99.0.2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := endpointDrift(&models.Endpoint{ID: 7, State: tc.state, Addressing: models.AddressPair{IPv4: tc.ipv4}}, ips)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
