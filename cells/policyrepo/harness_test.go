package policyrepo_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testAgent is the policy repository with just the infrastructure it
// needs; its routes are served by an httptest server.
type testAgent struct {
	t     *testing.T
	h     *hive.Hive
	db    *statedb.DB
	rules statedb.Table[*tables.PolicyRule]
	repo  *policyrepo.Repository
	srv   *httptest.Server
}

func newTestAgent(t *testing.T, stateDir string) *testAgent {
	t.Helper()
	a := &testAgent{t: t}
	a.h = hive.New(
		statedb.Cell,
		job.Cell,
		cell.Provide(cell.NewSimpleHealth),
		tables.Cell,
		statedir.Cell,
		policyrepo.Cell,
		cell.Invoke(func(db *statedb.DB, rules statedb.Table[*tables.PolicyRule], repo *policyrepo.Repository) {
			a.db, a.rules, a.repo = db, rules, repo
		}),
		apiserver.RoutesHandler(func(h http.Handler) { a.srv = httptest.NewServer(h) }),
	)
	hive.AddConfigOverride(a.h, func(c *statedir.Config) { c.StateDir = stateDir })
	return a
}

// start starts the hive; stop is registered as cleanup.
func (a *testAgent) start() *testAgent {
	a.t.Helper()
	if err := a.h.Start(hivetest.Logger(a.t), context.Background()); err != nil {
		a.t.Fatalf("start: %v", err)
	}
	a.t.Cleanup(a.stop)
	return a
}

func (a *testAgent) stop() {
	if a.srv != nil {
		a.srv.Close()
		a.srv = nil
		a.h.Stop(hivetest.Logger(a.t), context.Background())
	}
}

// do sends body (raw) and returns the status and the decoded JSON answer.
func (a *testAgent) do(method, body string) (int, map[string]any) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.srv.URL+"/v1/policy", rd)
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		a.t.Fatalf("%s /v1/policy: answer is not JSON: %v", method, err)
	}
	return resp.StatusCode, out
}

// expect sends a request and checks the status; it returns the answer.
func (a *testAgent) expect(method, body string, code int) map[string]any {
	a.t.Helper()
	got, out := a.do(method, body)
	if got != code {
		a.t.Fatalf("%s /v1/policy: status %d, want %d; answer %v", method, got, code, out)
	}
	return out
}

// rulesList is GET /v1/policy with the rules read back into table rows,
// so tests compare what the API shows with what the table holds.
type rulesList struct {
	Revision uint64
	Rules    []*tables.PolicyRule
}

// list is GET /v1/policy decoded.
func (a *testAgent) list() rulesList {
	a.t.Helper()
	resp, err := a.srv.Client().Get(a.srv.URL + "/v1/policy")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out models.PolicyRulesResponse
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("GET /v1/policy: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		a.t.Fatal(err)
	}
	l := rulesList{Revision: out.Revision}
	for _, r := range out.Rules {
		row := &tables.PolicyRule{Key: r.Key, Revision: r.Revision, Namespace: r.Namespace, Labels: r.Labels}
		if err := json.Unmarshal(r.Rule, &row.Rule); err != nil {
			a.t.Fatalf("GET /v1/policy: rule %s: %v", r.Key, err)
		}
		l.Rules = append(l.Rules, row)
	}
	return l
}

// rows returns the table's rows.
func (a *testAgent) rows() []*tables.PolicyRule {
	var out []*tables.PolicyRule
	for r := range a.rules.All(a.db.ReadTxn()) {
		out = append(out, r)
	}
	return out
}
