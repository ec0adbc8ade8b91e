package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const policyYAML = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-allow
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
`

const policyJSON = `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}], "labels": [{"key": "policy", "value": "web", "source": "k8s"}]}]`

// recordPut answers PUT /v1/policy with answer and records what it got.
type recorded struct {
	mu                sync.Mutex
	body, contentType string
}

func (rc *recorded) handler(answerBody string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.body, rc.contentType = string(b), r.Header.Get("Content-Type")
		rc.mu.Unlock()
		answer(w, 200, answerBody)
	}
}

func (rc *recorded) get() (string, string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.body, rc.contentType
}

func TestPolicyImport(t *testing.T) {
	f := newFakeAgent(t)
	var rc recorded
	f.handle("PUT /v1/policy", rc.handler(`{"revision": 4, "rules": 1}`))
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "web.yaml")
	jsonFile := filepath.Join(dir, "web.json")
	os.WriteFile(yamlFile, []byte(policyYAML), 0o644)
	os.WriteFile(jsonFile, []byte("\n  "+policyJSON), 0o644)

	// The file goes to the agent unchanged: the agent parses it.
	wantLines(t, ok(t, f.args("policy", "import", "-f", yamlFile)...), "imported 1 rule, policy revision 4")
	if body, ct := rc.get(); body != policyYAML || ct != "application/yaml" {
		t.Fatalf("sent %q as %q", body, ct)
	}
	wantLines(t, ok(t, f.args("policy", "import", "-f", jsonFile)...), "imported 1 rule, policy revision 4")
	if body, ct := rc.get(); body != "\n  "+policyJSON || ct != "application/json" {
		t.Fatalf("sent %q as %q", body, ct)
	}
	var out map[string]any
	mustJSON(t, ok(t, f.args("policy", "import", "-f", yamlFile, "-o", "json")...), &out)
	if out["revision"] != 4.0 {
		t.Fatalf("-o json: %v", out)
	}

	// From stdin.
	r := run(t, policyYAML, f.args("policy", "import", "-f", "-")...)
	if r.code != 0 || r.stdout != "imported 1 rule, policy revision 4\n" {
		t.Fatalf("stdin: %+v", r)
	}
	if body, _ := rc.get(); body != policyYAML {
		t.Fatalf("stdin sent %q", body)
	}

	// An answer of another shape is shown as it is.
	g := newFakeAgent(t)
	g.canned("PUT /v1/policy", 200, `{"imported": 2, "policy-revision": 9}`)
	wantLines(t, ok(t, g.args("policy", "import", "-f", yamlFile)...), "imported: 2", "policy-revision: 9")
	g = newFakeAgent(t)
	g.canned("PUT /v1/policy", 200, `{"revision": 9}`)
	wantLines(t, ok(t, g.args("policy", "import", "-f", yamlFile)...), "policy imported, revision 9")

	// The agent's refusal reaches the operator as it is.
	g = newFakeAgent(t)
	g.canned("PUT /v1/policy", 400, `{"code":400,"message":"rule 0: ingress[0].toPorts[0].rules: L7 rules are not supported"}`)
	if e := fails(t, g.args("policy", "import", "-f", yamlFile)...); !strings.Contains(e,
		"import policy from "+yamlFile+": agent: rule 0: ingress[0].toPorts[0].rules: L7 rules are not supported (HTTP 400)") {
		t.Errorf("stderr %q", e)
	}

	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, []byte("\n \n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "import"}, "no policy file: give -f FILE"},
		{[]string{"policy", "import", "-f", filepath.Join(dir, "missing.yaml")}, "read policy file: open " + dir + "/missing.yaml: no such file or directory"},
		{[]string{"policy", "import", "-f", empty}, "policy file " + empty + " is empty"},
	} {
		if e := fails(t, f.args(c.args...)...); !strings.Contains(e, c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}
}

// rulesJSON is an answer of GET /v1/policy (cells/policyrepo).
const rulesJSON = `{"revision": 3, "rules": [
 {"key": "2/0", "revision": 2, "namespace": "default",
  "labels": ["k8s:io.cilium.k8s.policy.name=web-allow", "k8s:io.cilium.k8s.policy.namespace=default"],
  "rule": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}]}]}},
 {"key": "3/0", "revision": 3, "rule": {"endpointSelector": {}, "description": "all pods"}}]}`

func TestPolicyGet(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/policy", 200, rulesJSON)
	wantLines(t, ok(t, f.args("policy", "get")...),
		"# policy revision 3: 2 rules",
		"---",
		"# rule 2/0, imported at revision 2, namespace default, labels k8s:io.cilium.k8s.policy.name=web-allow,k8s:io.cilium.k8s.policy.namespace=default",
		"endpointSelector:",
		"  matchLabels:",
		"    app: web",
		"ingress:",
		"- fromEndpoints:",
		"  - matchLabels:",
		"      app: frontend",
		"---",
		"# rule 3/0, imported at revision 3",
		"description: all pods",
		"endpointSelector: {}",
	)
	var out map[string]any
	mustJSON(t, ok(t, f.args("policy", "get", "-o", "json")...), &out)
	if out["revision"] != 3.0 || len(out["rules"].([]any)) != 2 {
		t.Fatalf("-o json: %v", out)
	}

	g := newFakeAgent(t)
	g.canned("GET /v1/policy", 200, `{"revision": 0, "rules": []}`)
	wantLines(t, ok(t, g.args("policy", "get")...), "# policy revision 0: 0 rules")
}

func TestPolicyDelete(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("DELETE /v1/policy", 200, `{"revision": 5, "deleted": 2}`)
	wantLines(t, ok(t, f.args("policy", "delete", "k8s:policy=web", "k8s:io.kubernetes.pod.namespace=default")...), "deleted 2 rules, policy revision 5")
	wantLines(t, ok(t, f.args("policy", "delete", "--all")...), "deleted 2 rules, policy revision 5")
	sent := f.sent()
	if len(sent) != 2 || sent[0].Method != "DELETE" || sent[0].Path != "/v1/policy" ||
		sent[0].Body != `{"labels":["k8s:policy=web","k8s:io.kubernetes.pod.namespace=default"]}` || sent[1].Body != `{"labels":[]}` {
		t.Fatalf("sent %+v", sent)
	}
	if e := fails(t, f.args("policy", "delete")...); !strings.Contains(e, "no labels: give the labels of the rules to delete, or --all") {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, f.args("policy", "delete", "--all", "k8s:a=b")...); !strings.Contains(e, "either --all or labels, not both") {
		t.Errorf("stderr %q", e)
	}
	if len(f.sent()) != 2 {
		t.Fatal("an invalid delete reached the agent")
	}
	// No body in the answer: the command still says what it did.
	g := newFakeAgent(t)
	g.canned("DELETE /v1/policy", 200, ``)
	wantLines(t, ok(t, g.args("policy", "delete", "--all")...), "policy deleted")

	// Deleting nothing is the agent's 404.
	h := newFakeAgent(t)
	h.canned("DELETE /v1/policy", 404, `{"code":404,"message":"no policy rule carries all of the labels k8s:a=b"}`)
	if e := fails(t, h.args("policy", "delete", "k8s:a=b")...); !strings.Contains(e, "delete policy: agent: no policy rule carries all of the labels k8s:a=b (HTTP 404)") {
		t.Errorf("stderr %q", e)
	}
}

func TestPolicyTrace(t *testing.T) {
	f := newFakeAgent(t)
	// An answer of cells/policy's trace.
	f.canned("POST /v1/policy/trace", 200, `{"verdict": "denied", "reason": "the destination's ingress is default deny and no rule allows identity 300",
		"rules": [{"key": "2/0", "namespace": "default", "description": "web from frontend", "labels": ["k8s:io.cilium.k8s.policy.name=web-allow"]}],
		"ingress-enforced": true, "egress-enforced": false,
		"source": {"identity": 300, "labels": ["k8s:app=a", "k8s:io.kubernetes.pod.namespace=default"]},
		"destination": {"identity": 0, "labels": ["k8s:app=web", "k8s:tier=front"]},
		"egress": {"enforced": false, "verdict": "allowed", "reason": "not enforced", "entries": [], "rules": []},
		"ingress": {"enforced": true, "verdict": "denied", "reason": "no entry matches", "entries": [], "rules": ["2/0"]},
		"explanation": ["source: identity 300", "destination: no identity has these labels"]}`)
	wantLines(t, ok(t, f.args("policy", "trace", "--src-labels", "k8s:app=a,k8s:io.kubernetes.pod.namespace=default",
		"--dst-labels", "k8s:app=web", "--dst-labels", "k8s:tier=front", "--dport", "80/tcp")...),
		"Verdict:               denied",
		"Reason:                the destination's ingress is default deny and no rule allows identity 300",
		"Source:                identity 300 [k8s:app=a,k8s:io.kubernetes.pod.namespace=default]",
		"Destination:           no identity has these labels [k8s:app=web,k8s:tier=front]",
		"Source egress:         allowed, not enforced",
		"Destination ingress:   denied, enforced: no entry matches",
		"Rules:                 2/0 (namespace default): web from frontend [k8s:io.cilium.k8s.policy.name=web-allow]",
		"Explanation:           source: identity 300",
		"                       destination: no identity has these labels",
	)
	if got := f.sent()[0]; got.Method != "POST" || got.Body !=
		`{"src-labels":["k8s:app=a","k8s:io.kubernetes.pod.namespace=default"],"dst-labels":["k8s:app=web","k8s:tier=front"],"dport":80,"protocol":"TCP"}` {
		t.Fatalf("sent %+v", got)
	}
	ok(t, f.args("policy", "trace", "--src-labels", "k8s:app=a", "--dst-labels", "k8s:app=b", "--dport", "8/icmpv6")...)
	ok(t, f.args("policy", "trace", "--src-labels", "k8s:app=a", "--dst-labels", "k8s:app=b", "--dport", "53")...)
	ok(t, f.args("policy", "trace", "--src-labels", "k8s:app=a", "--dst-labels", "k8s:app=b")...)
	sent := f.sent()
	for i, want := range []string{
		`{"src-labels":["k8s:app=a"],"dst-labels":["k8s:app=b"],"dport":8,"protocol":"ICMPv6"}`,
		`{"src-labels":["k8s:app=a"],"dst-labels":["k8s:app=b"],"dport":53,"protocol":"TCP"}`,
		`{"src-labels":["k8s:app=a"],"dst-labels":["k8s:app=b"]}`,
	} {
		if sent[i+1].Body != want {
			t.Errorf("request %d: %s, want %s", i+1, sent[i+1].Body, want)
		}
	}
	var out map[string]any
	mustJSON(t, ok(t, f.args("policy", "trace", "--src-labels", "a", "--dst-labels", "b", "-o", "json")...), &out)
	if out["verdict"] != "denied" {
		t.Fatalf("-o json: %v", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dst-labels", "k8s:app=b"}, "give both --src-labels and --dst-labels"},
		{[]string{"--src-labels", "a", "--dst-labels", "b", "--dport", "http"}, `invalid --dport "http": want PORT[/PROTOCOL]`},
		{[]string{"--src-labels", "a", "--dst-labels", "b", "--dport", "70000/TCP"}, `invalid --dport "70000/TCP"`},
		{[]string{"--src-labels", "a", "--dst-labels", "b", "--dport", "80/ANY"}, `protocol "ANY" is not one of TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number`},
	} {
		if e := fails(t, f.args(append([]string{"policy", "trace"}, c.args...)...)...); !strings.Contains(e, c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}

	// A number is a protocol too; an answer of another shape is shown as is.
	h := newFakeAgent(t)
	h.canned("POST /v1/policy/trace", 200, `{"verdict": "allowed", "why": "because"}`)
	wantLines(t, ok(t, h.args("policy", "trace", "--src-labels", "a", "--dst-labels", "b", "--dport", "4789/17")...),
		"Verdict: allowed", "why: because")
	if got := h.sent()[0].Body; got != `{"src-labels":["a"],"dst-labels":["b"],"dport":4789,"protocol":"17"}` {
		t.Errorf("sent %s", got)
	}

	// Before the policy engine serves traces, the operator learns why.
	g := newFakeAgent(t)
	if e := fails(t, g.args("policy", "trace", "--src-labels", "a", "--dst-labels", "b")...); !strings.Contains(e, "no route for POST /v1/policy/trace") {
		t.Errorf("stderr %q", e)
	}
}
