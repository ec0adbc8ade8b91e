package containerd

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// importPolicy PUTs a policy and waits until every endpoint enforces it.
func (e *env) importPolicy(t *testing.T, doc string) {
	t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := e.Agent.Client.DoRaw(ctxT(t), http.MethodPut, "/v1/policy", "application/json", []byte(doc), &out); err != nil {
		t.Fatalf("import policy: %v\n%s", err, doc)
	}
	e.waitRevision(t, out.Revision)
}

func (e *env) deletePolicy(t *testing.T) {
	t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := e.Agent.Client.Do(ctxT(t), http.MethodDelete, "/v1/policy", map[string]any{}, &out); err != nil {
		t.Fatalf("delete policy: %v", err)
	}
	e.waitRevision(t, out.Revision)
}

func (e *env) waitRevision(t *testing.T, rev uint64) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, fmt.Sprintf("endpoints to enforce policy revision %d", rev), func() error {
		for _, ep := range e.Agent.Endpoints() {
			if ep.State != models.StateReady || ep.PolicyRevision < rev {
				return fmt.Errorf("endpoint %d (%s) is %s at revision %d", ep.ID, ep.K8sPodName, ep.State, ep.PolicyRevision)
			}
		}
		return nil
	})
}

// TestPolicyBetweenSandboxes: an L4 policy imported through the API is
// enforced between sandboxes containerd created, by their identities,
// with real TCP and ICMP from inside their network namespaces.
func TestPolicyBetweenSandboxes(t *testing.T) {
	e := newEnv(t, envOpts{})
	web := e.newPod("shop", "web", map[string]string{"app": "web"})
	client := e.newPod("shop", "client", map[string]string{"app": "client"})
	other := e.newPod("shop", "other", map[string]string{"app": "other"})
	pods := []*pod{web, client, other}
	for _, p := range pods {
		e.mustRun(p)
		e.checkSandbox(t, p)
	}
	startServer(t, web, "8080", "8081")
	ip := web.IP.String()

	type fact struct {
		what       string
		ok         func() bool
		wantPasses bool
	}
	expect := func(facts ...fact) {
		t.Helper()
		for _, f := range facts {
			if got := f.ok(); got != f.wantPasses {
				t.Errorf("%s: passes=%v, want %v", f.what, got, f.wantPasses)
			}
		}
	}
	tcp := func(from *pod, port string) func() bool { return func() bool { return canTCP(from, ip, port) } }
	ping := func(from *pod) func() bool { return func() bool { return canPing(from, ip) } }

	expect(
		fact{"no policy: client->web:8080", tcp(client, "8080"), true},
		fact{"no policy: other->web:8080", tcp(other, "8080"), true},
		fact{"no policy: other->web ICMP", ping(other), true},
	)

	e.importPolicy(t, `[{"endpointSelector":{"matchLabels":{"app":"web"}},
	  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
	              "toPorts":[{"ports":[{"port":"8080","protocol":"TCP"}]}]}]}]`)
	expect(
		fact{"client->web:8080 (allowed)", tcp(client, "8080"), true},
		fact{"client->web:8081 (port not allowed)", tcp(client, "8081"), false},
		fact{"other->web:8080 (other identity)", tcp(other, "8080"), false},
		fact{"client->web ICMP (not allowed)", ping(client), false},
		// web's egress is not enforced: its replies and own traffic pass.
		fact{"web->client ICMP (unselected direction)", func() bool { return canPing(web, client.IP.String()) }, true},
	)

	e.deletePolicy(t)
	expect(fact{"policy deleted: other->web:8080", tcp(other, "8080"), true})

	for _, p := range pods {
		if err := e.stop(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
		if err := e.remove(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
	}
	e.assertGone(t, pods...)
	e.assertNoIdentityReferences(t)
}
