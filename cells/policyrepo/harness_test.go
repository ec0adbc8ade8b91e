package policyrepo_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testAgent is the policy repository on the agent's infrastructure
// (celltest); its routes are served by an httptest server.
type testAgent struct {
	t     *testing.T
	h     *celltest.Hive
	db    *statedb.DB
	rules statedb.Table[*tables.PolicyRule]
	repo  *policyrepo.Repository
	srv   *httptest.Server
}

func newTestAgent(t *testing.T, stateDir string) *testAgent {
	t.Helper()
	a := &testAgent{t: t}
	a.h = celltest.New(t, stateDir,
		policyrepo.Cell,
		cell.Invoke(func(db *statedb.DB, rules statedb.Table[*tables.PolicyRule], repo *policyrepo.Repository) {
			a.db, a.rules, a.repo = db, rules, repo
		}),
	)
	return a
}

// start starts the hive and serves its routes; stop is registered as
// cleanup.
func (a *testAgent) start() *testAgent {
	a.t.Helper()
	a.h.StartTest()
	a.srv = httptest.NewServer(a.h.Routes)
	a.t.Cleanup(a.stop)
	return a
}

func (a *testAgent) stop() {
	if a.srv != nil {
		a.srv.Close()
		a.srv = nil
		a.h.StopTest()
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
		row := &tables.PolicyRule{Key: r.Key, Revision: r.Revision, Namespace: r.Namespace, Clusterwide: r.Clusterwide, Source: r.Source, Labels: r.Labels}
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
