package policyrepo_test

import (
	"io"
	"net/http"
	"os"
	"testing"
)

// getRaw is the body of GET path as the agent writes it, byte for byte.
func (a *testAgent) getRaw(path string) string {
	a.t.Helper()
	resp, err := a.srv.Client().Get(a.srv.URL + path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	return string(body)
}

// TestGetPolicyJSON pins the answer of GET /v1/policy byte for byte: its
// keys and their order, the rule as the policy language encodes it, and
// the encoding (indentation, HTML-safe escapes, empty fields omitted).
func TestGetPolicyJSON(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	if got, want := a.getRaw("/v1/policy"), "{\n  \"revision\": 0,\n  \"rules\": []\n}\n"; got != want {
		t.Errorf("empty repository:\n%s\nwant\n%s", got, want)
	}
	a.expect("PUT", webCNPv2, 200)
	a.expect("PUT", `[{"endpointSelector": {"matchLabels": {"app": "db"}}, "description": "<db> & friends",
	  "ingress": [{"fromCIDR": ["192.0.2.0/24"], "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]}]`, 200)
	want, err := os.ReadFile("testdata/get-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := a.getRaw("/v1/policy"); got != string(want) {
		t.Errorf("GET /v1/policy:\n%s\nwant (testdata/get-policy.json)\n%s", got, want)
	}
}
