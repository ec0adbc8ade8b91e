package podman

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/testutil"
)

// setup gates a test: root (or a failure under CI), not -short, binaries
// and tools there.
func setup(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("podman suite: skipped with -short")
	}
	testutil.RequirePrivileged(t)
	needBinaries(t)
}

// ---- the agent -------------------------------------------------------

// agent is a membrane-agent of the test's own (e2eutil.Agent: paths, pod
// CIDR, client, Stop) with what this suite asks of it.
type agent struct {
	*e2eutil.Agent
	t *testing.T
}

// startAgent runs membrane-agent on temporary paths (socket, state dir,
// bpffs dir, a free pod CIDR) with extra flags and waits until it answers
// /v1/healthz. It is stopped (by PID) when the test ends.
func startAgent(t *testing.T, extra ...string) *agent {
	t.Helper()
	return &agent{t: t, Agent: e2eutil.StartAgent(t, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		TempPattern: "mbpodman",
		Pool:        e2eutil.PoolE2E,
		Extra:       extra,
		KeepLogsEnv: "MEMBRANE_PODMAN_KEEP_LOGS",
	})}
}

// cli runs the membrane CLI against this agent.
func (a *agent) cli(args ...string) (string, error) {
	out, err := exec.Command(bins.CLI, append([]string{"--socket", a.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("membrane %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// label registers labels for pod default/name the way a podman user does.
func (a *agent) label(name string, kv ...string) {
	a.t.Helper()
	if _, err := a.cli(append([]string{"pod", "label", name}, kv...)...); err != nil {
		a.t.Fatal(err)
	}
}

// endpoint is the endpoint of a container's eth0, or nil if there is none.
func (a *agent) endpoint(containerID string) *models.Endpoint {
	a.t.Helper()
	ep, err := a.Client.GetEndpoint(e2eutil.Context(a.t), "cni-attachment-id:"+containerID+":eth0")
	if client.IsStatus(err, http.StatusNotFound) {
		return nil
	}
	if err != nil {
		a.t.Fatalf("GET endpoint of container %s: %v", containerID, err)
	}
	return ep
}

// ownedIPs lists the addresses IPAM holds for a container's eth0.
func (a *agent) ownedIPs(containerID string) []string {
	a.t.Helper()
	var ips []string
	for _, r := range a.IPs() {
		if r.Owner == containerID+":eth0" {
			ips = append(ips, r.IP)
		}
	}
	return ips
}

// importPolicy PUTs a policy document and waits until every endpoint
// enforces that revision.
func (a *agent) importPolicy(doc string) {
	a.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := a.Client.DoRaw(e2eutil.Context(a.t), http.MethodPut, "/v1/policy", "application/json", []byte(doc), &out); err != nil {
		a.t.Fatalf("PUT /v1/policy: %v\n%s", err, doc)
	}
	a.waitRevision(out.Revision)
}

// deletePolicy removes every rule and waits until the endpoints know.
func (a *agent) deletePolicy() {
	a.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := a.Client.Do(e2eutil.Context(a.t), http.MethodDelete, "/v1/policy", map[string]any{}, &out); err != nil {
		a.t.Fatalf("DELETE /v1/policy: %v", err)
	}
	a.waitRevision(out.Revision)
}

func (a *agent) waitRevision(rev uint64) {
	a.t.Helper()
	e2eutil.Eventually(a.t, 30*time.Second, fmt.Sprintf("endpoints to enforce policy revision %d", rev), func() error {
		eps, err := a.Client.ListEndpoints(e2eutil.Context(a.t))
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.State != models.StateReady || ep.PolicyRevision < rev {
				return fmt.Errorf("endpoint %d (%s) is %s at revision %d", ep.ID, ep.K8sPodName, ep.State, ep.PolicyRevision)
			}
		}
		return nil
	})
}
