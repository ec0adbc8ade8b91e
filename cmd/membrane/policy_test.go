package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

// policyYAML lets pods labelled app=frontend reach app=web on TCP port 80.
const policyYAML = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-allow
spec:
  description: web from frontend
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

// policyFiles writes policyYAML and policyJSON (after blank space) to files.
func policyFiles(t *testing.T) (yamlFile, jsonFile string) {
	t.Helper()
	dir := t.TempDir()
	yamlFile, jsonFile = filepath.Join(dir, "web.yaml"), filepath.Join(dir, "web.json")
	if err := os.WriteFile(yamlFile, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jsonFile, []byte("\n  "+policyJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return yamlFile, jsonFile
}

// policyRevision is the agent's policy revision.
func (a *testAgent) policyRevision() float64 {
	a.t.Helper()
	var p map[string]any
	mustJSON(a.t, ok(a.t, a.args("policy", "get", "-o", "json")...), &p)
	return p["revision"].(float64)
}

func TestPolicyImport(t *testing.T) {
	a := startAgent(t)
	yamlFile, jsonFile := policyFiles(t)

	// The file goes to the agent as it is written: the agent reads both.
	wantLines(t, ok(t, a.args("policy", "import", "-f", yamlFile)...), "imported 1 rule, policy revision 1")
	wantLines(t, ok(t, a.args("policy", "import", "-f", jsonFile)...), "imported 1 rule, policy revision 2")
	var out map[string]any
	mustJSON(t, ok(t, a.args("policy", "import", "-f", yamlFile, "-o", "json")...), &out)
	if out["revision"] != 3.0 || out["rules"] != 1.0 {
		t.Fatalf("-o json: %v", out)
	}
	// From stdin.
	if r := run(t, policyYAML, a.args("policy", "import", "-f", "-")...); r.code != 0 || r.stdout != "imported 1 rule, policy revision 4\n" {
		t.Fatalf("stdin: %+v", r)
	}

	// The agent's refusal reaches the operator as it is; nothing is imported.
	l7 := filepath.Join(t.TempDir(), "l7.yaml")
	os.WriteFile(l7, []byte(policyYAML+"      rules:\n        http:\n        - method: GET\n"), 0o644)
	e := fails(t, a.args("policy", "import", "-f", l7)...)
	if !strings.HasPrefix(e, "Error: import policy from "+l7+": agent: ") || !strings.Contains(e, "spec.ingress[0].toPorts[0].rules: L7 rules") ||
		!strings.HasSuffix(e, " (HTTP 400)\n") {
		t.Errorf("stderr %q", e)
	}

	dir := t.TempDir()
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
		if e := fails(t, a.args(c.args...)...); !strings.Contains(e, c.want) || strings.Contains(e, "HTTP") {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}
	if rev := a.policyRevision(); rev != 4 {
		t.Errorf("policy revision %v after refused imports, want 4", rev)
	}
}

func TestPolicyGet(t *testing.T) {
	a := startAgent(t)
	wantLines(t, ok(t, a.args("policy", "get")...), "# policy revision 0: 0 rules")

	yamlFile, jsonFile := policyFiles(t)
	ok(t, a.args("policy", "import", "-f", yamlFile)...)
	ok(t, a.args("policy", "import", "-f", jsonFile)...)
	cnpLabels := []string{"k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy", "k8s:io.cilium.k8s.policy.name=web-allow",
		"k8s:io.cilium.k8s.policy.namespace=default"}
	wantLines(t, ok(t, a.args("policy", "get")...),
		"# policy revision 2: 2 rules",
		"---",
		"# rule 1/0, imported at revision 1 from api, namespace default, labels "+strings.Join(cnpLabels, ","),
		"description: web from frontend",
		"endpointSelector:",
		"  matchLabels:",
		"    app: web",
		"ingress:",
		"- fromEndpoints:",
		"  - matchLabels:",
		"      app: frontend",
		"  toPorts:",
		"  - ports:",
		"    - port: \"80\"",
		"      protocol: TCP",
		"labels:",
		"- key: io.cilium.k8s.policy.derived-from",
		"  source: k8s",
		"  value: CiliumNetworkPolicy",
		"- key: io.cilium.k8s.policy.name",
		"  source: k8s",
		"  value: web-allow",
		"- key: io.cilium.k8s.policy.namespace",
		"  source: k8s",
		"  value: default",
		"---",
		"# rule 2/0, imported at revision 2 from api, labels k8s:policy=web",
		"endpointSelector:",
		"  matchLabels:",
		"    app: web",
		"ingress:",
		"- {}",
		"labels:",
		"- key: policy",
		"  source: k8s",
		"  value: web",
	)
	var out map[string]any
	mustJSON(t, ok(t, a.args("policy", "get", "-o", "json")...), &out)
	if out["revision"] != 2.0 || len(out["rules"].([]any)) != 2 {
		t.Fatalf("-o json: %v", out)
	}
}

func TestPolicyDelete(t *testing.T) {
	a := startAgent(t)
	yamlFile, jsonFile := policyFiles(t)
	ok(t, a.args("policy", "import", "-f", yamlFile)...)
	ok(t, a.args("policy", "import", "-f", jsonFile)...)

	// A rule goes only if it carries every label given.
	if e := fails(t, a.args("policy", "delete", "k8s:policy=web", "k8s:io.kubernetes.pod.namespace=default")...); e !=
		"Error: delete policy: agent: no policy rule carries all of the labels k8s:policy=web, k8s:io.kubernetes.pod.namespace=default (HTTP 404)\n" {
		t.Errorf("stderr %q", e)
	}
	wantLines(t, ok(t, a.args("policy", "delete", "k8s:policy=web")...), "deleted 1 rule, policy revision 3")
	ok(t, a.args("policy", "import", "-f", jsonFile)...)
	var out map[string]any
	mustJSON(t, ok(t, a.args("policy", "delete", "--all", "-o", "json")...), &out)
	if out["revision"] != 5.0 || out["deleted"] != 2.0 {
		t.Fatalf("-o json: %v", out)
	}
	// Deleting nothing is the agent's 404.
	if e := fails(t, a.args("policy", "delete", "--all")...); e != "Error: delete policy: agent: no policy rules to delete (HTTP 404)\n" {
		t.Errorf("stderr %q", e)
	}

	if e := fails(t, a.args("policy", "delete")...); !strings.Contains(e, "no labels: give the labels of the rules to delete, or --all") {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, a.args("policy", "delete", "--all", "k8s:a=b")...); !strings.Contains(e, "either --all or labels, not both") {
		t.Errorf("stderr %q", e)
	}
	if rev := a.policyRevision(); rev != 5 {
		t.Errorf("policy revision %v after invalid deletes, want 5", rev)
	}
}

// TestPolicyTrace traces traffic between pods with endpoints (so their
// labels have identities) under web-allow, and reads what reached the
// kernel for the destination.
func TestPolicyTrace(t *testing.T) {
	a := startAgent(t)
	eps := map[string]*models.Endpoint{}
	for _, app := range []string{"web", "a", "frontend"} {
		a.putPod(models.Pod{Namespace: "default", Name: app, Labels: map[string]string{"app": app}})
		eps[app] = a.addEndpoint(endpointSpec{container: app + "-0123456789", pod: "default/" + app})
	}
	identity := func(app string) string { return strconv.Itoa(int(eps[app].Identity.ID)) }
	if r := run(t, policyYAML, a.args("policy", "import", "-f", "-")...); r.code != 0 {
		t.Fatalf("policy import: %+v", r)
	}
	trace := func(src, dst string, more ...string) []string {
		return a.args(append([]string{"policy", "trace", "--src-labels", src, "--dst-labels", dst}, more...)...)
	}
	const ns = "k8s:io.kubernetes.pod.namespace=default"

	out := ok(t, trace("k8s:app=a,"+ns, "k8s:app=web", "--dst-labels", ns, "--dport", "80/tcp")...)
	lines := strings.Split(out, "\n")
	wantLines(t, strings.Join(lines[:7], "\n")+"\n",
		"Verdict:               denied",
		"Reason:                ingress of the destination: default deny (turned on by rule 1/0): no entry allows the flow",
		"Source:                identity "+identity("a")+" [k8s:app=a,"+ns+"]",
		"Destination:           identity "+identity("web")+" [k8s:app=web,"+ns+"]",
		"Source egress:         allowed, not enforced",
		"Destination ingress:   denied, enforced: default deny (turned on by rule 1/0): no entry allows the flow",
		"Rules:                 1/0 (namespace default): web from frontend [k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy,"+
			"k8s:io.cilium.k8s.policy.name=web-allow,k8s:io.cilium.k8s.policy.namespace=default]",
	)
	if !strings.HasPrefix(lines[7], "Explanation:           source: identity "+identity("a")) || !strings.HasPrefix(lines[8], strings.Repeat(" ", 23)) {
		t.Errorf("trace:\n%s", out)
	}

	// An allowed flow: the reason names the rule that allowed it on the
	// side that enforces policy, not the side that does not.
	out = ok(t, trace("k8s:app=frontend,"+ns, "k8s:app=web,"+ns, "--dport", "80")...)
	lines = strings.Split(out, "\n")
	wantLines(t, strings.Join(slices.Concat(lines[:2], lines[4:6]), "\n")+"\n",
		"Verdict:               allowed",
		"Reason:                ingress of the destination: allowed by rule 1/0",
		"Source egress:         allowed, not enforced",
		"Destination ingress:   allowed, enforced: by rule 1/0",
	)

	// Port and protocol reach the policy engine: only TCP port 80 is allowed.
	for dport, verdict := range map[string]string{"80/TCP": "allowed", "80": "allowed", "80/udp": "denied", "81": "denied",
		"8/icmpv6": "denied", "4789/17": "denied"} {
		var got map[string]any
		mustJSON(t, ok(t, trace("k8s:app=frontend,"+ns, "k8s:app=web,"+ns, "--dport", dport, "-o", "json")...), &got)
		if got["verdict"] != verdict || got["source"].(map[string]any)["identity"] != float64(eps["frontend"].Identity.ID) {
			t.Errorf("--dport %s: %v, want %s", dport, got, verdict)
		}
	}
	out = ok(t, trace("k8s:app=frontend,"+ns, "k8s:app=nobody,"+ns)...)
	if !strings.Contains(out, "\nDestination:           no identity has these labels [k8s:app=nobody,"+ns+"]\n") {
		t.Errorf("trace to labels no endpoint has:\n%s", out)
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
		if e := fails(t, a.args(append([]string{"policy", "trace"}, c.args...)...)...); !strings.Contains(e, c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, e, c.want)
		}
	}

	// What the datapath enforces for web: the entry for frontend.
	out = ok(t, a.args("bpf", "policy", "get", idOf(eps["web"]), "--bpf-root", a.bpfRoot)...)
	if !strings.HasPrefix(out, "Endpoint "+idOf(eps["web"])+": ingress enforced (only what an entry allows passes)") ||
		!strings.Contains(out, "\ningress     "+padRight(identity("frontend"), 11)+"k8s:app=frontend") {
		t.Errorf("bpf policy get:\n%s", out)
	}

}

// TestPolicyAnswers renders answers of shapes the agent does not send
// (another version's), and reads what the CLI sends.
func TestPolicyAnswers(t *testing.T) {
	for _, c := range []struct {
		answer         any
		verb, countKey string
		want           string
	}{
		{map[string]any{"revision": 4.0, "rules": 1.0}, "imported", "rules", "imported 1 rule, policy revision 4\n"},
		{map[string]any{"revision": 5.0, "deleted": 2.0}, "deleted", "deleted", "deleted 2 rules, policy revision 5\n"},
		{map[string]any{"imported": 2.0, "policy-revision": 9.0}, "imported", "rules", "imported: 2\npolicy-revision: 9\n"},
		{map[string]any{"revision": 9.0}, "imported", "rules", "policy imported, revision 9\n"},
		{nil, "deleted", "deleted", "policy deleted\n"}, // no body
	} {
		var out strings.Builder
		if err := printPolicyAnswer(&out, c.answer, c.verb, c.countKey); err != nil || out.String() != c.want {
			t.Errorf("%v: %q, %v; want %q", c.answer, out.String(), err, c.want)
		}
	}

	var out strings.Builder
	printTrace(&out, map[string]any{"verdict": "allowed", "why": "because"})
	wantLines(t, out.String(), "Verdict: allowed", "why: because")

	for data, want := range map[string]string{policyYAML: "application/yaml", "\n  " + policyJSON: "application/json", `{"kind": "x"}`: "application/json"} {
		if got := policyContentType([]byte(data)); got != want {
			t.Errorf("content type of %.20q: %s, want %s", data, got, want)
		}
	}
	for in, want := range map[string]string{"80/tcp": "80 TCP", "8/icmpv6": "8 ICMPv6", "53": "53 TCP", "4789/17": "4789 17", "0/sctp": "0 SCTP"} {
		port, proto, err := parseDPort(in)
		if got := strconv.Itoa(int(port)) + " " + proto; err != nil || got != want {
			t.Errorf("parseDPort(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"http", "70000/TCP", "80/ANY", "80/0", "-1"} {
		if _, _, err := parseDPort(in); err == nil {
			t.Errorf("parseDPort(%q): no error", in)
		}
	}
}
