package policyrepo_test

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/hive/hivetest"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

const webCNP = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {role: frontend}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
- endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [world]
`

const webCNPv2 = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {role: frontend}}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
`

const plainRules = `[
  {"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}]}],
   "labels": ["team=storage", "k8s:tier=db"]},
  {"endpointSelector": {"matchLabels": {"app": "cache"}}, "ingress": [{}], "labels": ["team=storage"]}
]`

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// keys returns the rows' keys, sorted.
func keys(rows []*tables.PolicyRule) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Key)
	}
	slices.Sort(out)
	return out
}

// Each import is one new revision holding all the rules of its document;
// GET shows them with their keys, revisions, namespaces and labels.
func TestImportBumpsRevision(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	if got := a.list(); got.Revision != 0 || len(got.Rules) != 0 {
		t.Fatalf("fresh repository: %+v", got)
	}

	out := a.expect("PUT", webCNP, 200)
	if num(out["revision"]) != 1 || num(out["rules"]) != 2 {
		t.Fatalf("first import answered %v, want revision 1, 2 rules", out)
	}
	out = a.expect("PUT", plainRules, 200)
	if num(out["revision"]) != 2 || num(out["rules"]) != 2 {
		t.Fatalf("second import answered %v, want revision 2, 2 rules", out)
	}
	if a.repo.Revision() != 2 || a.repo.RevisionAt(a.db.ReadTxn()) != 2 {
		t.Errorf("Revision %d, RevisionAt %d; want 2", a.repo.Revision(), a.repo.RevisionAt(a.db.ReadTxn()))
	}

	got := a.list()
	if got.Revision != 2 || len(got.Rules) != 4 {
		t.Fatalf("GET: revision %d, %d rules; want 2, 4", got.Revision, len(got.Rules))
	}
	first := got.Rules[0]
	if first.Key != "1/0" || first.Revision != 1 || first.Namespace != "prod" ||
		!slices.Contains(first.Labels, "k8s:io.cilium.k8s.policy.name=web") ||
		first.Rule.EndpointSelector == nil || first.Rule.EndpointSelector.MatchLabels["app"] != "web" {
		t.Errorf("first rule: %+v", first)
	}
	if last := got.Rules[3]; last.Key != "2/1" || last.Namespace != "" || !slices.Equal(last.Labels, []string{"unspec:team=storage"}) {
		t.Errorf("last rule: %+v", last)
	}
	if k := keys(a.rows()); !slices.Equal(k, []string{"1/0", "1/1", "2/0", "2/1"}) {
		t.Errorf("table keys %v", k)
	}
}

// A document with any problem is refused as a whole, with a 400 that
// names the field, and leaves rules and revision alone.
func TestImportRejectsInvalidDocuments(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	a.expect("PUT", webCNP, 200)

	bad := plainRules[:len(plainRules)-1] + `, {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{"method": "GET"}]}}]}]}]`
	cases := []struct{ body, msg string }{
		{bad, "rule 3: ingress[0].toPorts[0].rules: L7 rules (http/dns/kafka) are not supported; Membrane enforces L3/L4 only"},
		{`{"endpointSelector": {}, "ingres": []}`, `rule 1: ingres: unknown field (did you mean "ingress"?)`},
		{"endpointSelector: {}\negress: [{toFQDNs: [{matchName: example.com}]}]\n", "egress[0].toFQDNs: toFQDNs is not supported"},
		{"  \n", "empty request body"},
	}
	for _, c := range cases {
		out := a.expect("PUT", c.body, 400)
		if msg, _ := out["message"].(string); !strings.Contains(msg, c.msg) || num(out["code"]) != 400 {
			t.Errorf("answer %v, want message containing %q", out, c.msg)
		}
	}
	if got := a.list(); got.Revision != 1 || len(got.Rules) != 2 {
		t.Errorf("after refused imports: revision %d, %d rules; want 1, 2", got.Revision, len(got.Rules))
	}
}

// Re-importing a CiliumNetworkPolicy replaces the rules its previous
// import left; a policy of the same name elsewhere is untouched.
func TestImportReplacesCNPByName(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	a.expect("PUT", webCNP, 200)                                                          // rev 1: prod/web, 2 rules
	a.expect("PUT", strings.Replace(webCNP, "namespace: prod", "namespace: dev", 1), 200) // rev 2: dev/web
	a.expect("PUT", `{"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "web"},
		"spec": {"endpointSelector": {}, "ingress": [{}]}}`, 200) // rev 3: the cluster-wide web
	a.expect("PUT", plainRules, 200) // rev 4

	out := a.expect("PUT", webCNPv2, 200)
	if num(out["revision"]) != 5 || num(out["rules"]) != 1 {
		t.Fatalf("re-import answered %v", out)
	}
	byNS := map[string][]uint64{}
	for _, r := range a.list().Rules {
		name := ""
		for _, l := range r.Labels {
			if v, ok := strings.CutPrefix(l, "k8s:io.cilium.k8s.policy.name="); ok {
				name = v
			}
		}
		byNS[r.Namespace+"/"+name] = append(byNS[r.Namespace+"/"+name], r.Revision)
	}
	want := map[string][]uint64{"prod/web": {5}, "dev/web": {2, 2}, "/web": {3}, "/": {4, 4}}
	for k, w := range want {
		if !slices.Equal(byNS[k], w) {
			t.Errorf("rules of %q have revisions %v, want %v (all: %v)", k, byNS[k], w, byNS)
		}
	}
	for _, r := range a.rows() {
		if r.Namespace == "prod" && r.Rule.Ingress[0].ToPorts[0].Ports[0].Port != "443" {
			t.Errorf("prod/web still has the old rule %s", r.Key)
		}
	}
}

// DELETE with labels removes the rules carrying all of them; a label
// without a source matches any source; nothing matched is a 404 that
// changes nothing.
func TestDeleteByLabels(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	a.expect("PUT", webCNP, 200)     // rev 1
	a.expect("PUT", plainRules, 200) // rev 2

	out := a.expect("DELETE", `{"labels": ["team=storage", "k8s:tier=db"]}`, 200)
	if num(out["revision"]) != 3 || num(out["deleted"]) != 1 {
		t.Fatalf("delete answered %v, want revision 3, 1 deleted", out)
	}
	out = a.expect("DELETE", `{"labels": ["k8s:io.cilium.k8s.policy.name=web", "io.cilium.k8s.policy.namespace=prod"]}`, 200)
	if num(out["revision"]) != 4 || num(out["deleted"]) != 2 {
		t.Fatalf("delete answered %v, want revision 4, 2 deleted", out)
	}
	if k := keys(a.rows()); !slices.Equal(k, []string{"2/1"}) {
		t.Errorf("rows left %v, want [2/1]", k)
	}

	for _, body := range []string{
		`{"labels": ["k8s:io.cilium.k8s.policy.name=web"]}`,
		`{"labels": ["k8s:team=storage"]}`, // the rule's label has source unspec
		`{"labels": ["team=storage", "team=other"]}`,
	} {
		out := a.expect("DELETE", body, 404)
		if msg, _ := out["message"].(string); !strings.Contains(msg, "no policy rule carries all of the labels") {
			t.Errorf("%s: answer %v", body, out)
		}
	}
	a.expect("DELETE", `{"labels": ["bad key"]}`, 400)
	a.expect("DELETE", `{"lables": ["a=b"]}`, 400)
	if got := a.list(); got.Revision != 4 || len(got.Rules) != 1 {
		t.Errorf("after refused deletes: revision %d, %d rules; want 4, 1", got.Revision, len(got.Rules))
	}
}

// DELETE without labels empties the repository under a new revision, which
// GET and readers of the (now empty) table still see.
func TestDeleteAll(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	a.expect("PUT", webCNP, 200)
	a.expect("PUT", plainRules, 200)
	before := a.db.ReadTxn()

	out := a.expect("DELETE", "", 200)
	if num(out["revision"]) != 3 || num(out["deleted"]) != 4 {
		t.Fatalf("delete all answered %v", out)
	}
	if got := a.list(); got.Revision != 3 || len(got.Rules) != 0 {
		t.Errorf("GET after delete all: %+v", got)
	}
	if rev := a.repo.RevisionAt(a.db.ReadTxn()); rev != 3 {
		t.Errorf("RevisionAt(now) = %d, want 3", rev)
	}
	// A snapshot taken before sees the rules of revision 2, and says so.
	if rev, n := a.repo.RevisionAt(before), a.rules.NumObjects(before); rev != 2 || n != 4 {
		t.Errorf("old snapshot: revision %d with %d rules, want 2 with 4", rev, n)
	}

	out = a.expect("DELETE", `{"labels": []}`, 404)
	if msg, _ := out["message"].(string); !strings.Contains(msg, "no policy rules to delete") {
		t.Errorf("answer %v", out)
	}
	if a.repo.Revision() != 3 {
		t.Errorf("revision %d after deleting nothing, want 3", a.repo.Revision())
	}
}

// Bodies past 1 MiB are refused with 413 before parsing.
func TestBodyTooLarge(t *testing.T) {
	a := newTestAgent(t, t.TempDir()).start()
	huge := `{"endpointSelector": {}, "description": "` + strings.Repeat("x", apiserver.MaxBodyBytes) + `"}`
	for _, method := range []string{"PUT", "DELETE"} {
		out := a.expect(method, huge, 413)
		if msg, _ := out["message"].(string); !strings.Contains(msg, "larger than") {
			t.Errorf("%s: answer %v", method, out)
		}
	}
	if a.repo.Revision() != 0 {
		t.Errorf("revision %d", a.repo.Revision())
	}
}

// A restarted agent has the same rules under the same revision, and its
// table is initialized only once they are back.
func TestRestartRestoresRulesAndRevision(t *testing.T) {
	dir := t.TempDir()
	a := newTestAgent(t, dir).start()
	a.expect("PUT", webCNP, 200)
	a.expect("PUT", plainRules, 200)
	a.expect("DELETE", `{"labels": ["k8s:tier=db"]}`, 200) // rev 3
	want := a.list()
	a.stop()

	b := newTestAgent(t, dir)
	if err := b.h.Populate(hivetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if init, _ := b.rules.Initialized(b.db.ReadTxn()); init {
		t.Error("policy-rules initialized before the repository restored it")
	}
	b.start()
	if init, _ := b.rules.Initialized(b.db.ReadTxn()); !init {
		t.Errorf("policy-rules not initialized after start: pending %v", b.rules.PendingInitializers(b.db.ReadTxn()))
	}
	got := b.list()
	if got.Revision != 3 || keys(got.Rules) == nil || !slices.Equal(keys(got.Rules), keys(want.Rules)) {
		t.Fatalf("after restart: revision %d keys %v; want 3 %v", got.Revision, keys(got.Rules), keys(want.Rules))
	}
	for i := range got.Rules {
		g, w := got.Rules[i], want.Rules[i]
		if g.Namespace != w.Namespace || g.Clusterwide != w.Clusterwide || !slices.Equal(g.Labels, w.Labels) || g.Revision != w.Revision {
			t.Errorf("rule %s: %+v, want %+v", g.Key, g, w)
		}
	}

	// Numbering goes on; deleting everything survives a restart too.
	if out := b.expect("PUT", webCNPv2, 200); num(out["revision"]) != 4 {
		t.Errorf("import after restart answered %v, want revision 4", out)
	}
	b.expect("DELETE", "", 200) // rev 5
	b.stop()
	c := newTestAgent(t, dir).start()
	if got := c.list(); got.Revision != 5 || len(got.Rules) != 0 {
		t.Errorf("after delete all and restart: revision %d, %d rules; want 5, 0", got.Revision, len(got.Rules))
	}
}

// A state file that does not hold valid rules stops the start with an
// error naming it, instead of enforcing less than was imported.
func TestRestoreRefusesCorruptState(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":     `{"revision": 3, "rules": [`,
		"invalid rule": `{"revision": 3, "rules": [{"key": "3/0", "revision": 3, "rule": {"endpointSelector": {}, "egress": [{"toFQDNs": [{}]}]}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			a := newTestAgent(t, dir)
			err := a.h.Start(hivetest.Logger(t), t.Context())
			if err == nil {
				a.h.Stop(hivetest.Logger(t), t.Context())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, "policy.json")) {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

// A CiliumClusterwideNetworkPolicy's rules are marked clusterwide (the
// engine scopes their peer selectors by it), in the table, in GET and
// across a restart; a policy.json written before rows carried the mark
// gets it back from the label the import derived from the object.
func TestClusterwideRules(t *testing.T) {
	const ccnp = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: dns}
spec:
  endpointSelector: {}
  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns}}]
`
	dir := t.TempDir()
	a := newTestAgent(t, dir).start()
	a.expect("PUT", webCNPv2, 200)
	a.expect("PUT", ccnp, 200)
	a.expect("PUT", plainRules, 200)
	check := func(when string, rules []*tables.PolicyRule) {
		t.Helper()
		got := map[string]bool{}
		for _, r := range rules {
			got[r.Key] = r.Clusterwide
		}
		if want := map[string]bool{"1/0": false, "2/0": true, "3/0": false, "3/1": false}; !maps.Equal(got, want) {
			t.Errorf("%s: clusterwide by rule %v, want %v", when, got, want)
		}
	}
	check("table", a.rows())
	check("GET", a.list().Rules)
	a.stop()
	check("after restart", newTestAgent(t, dir).start().list().Rules)

	old := `{"revision": 1, "rules": [{"key": "1/0", "revision": 1, "rule": {"endpointSelector": {}},
	  "labels": ["k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy", "k8s:io.cilium.k8s.policy.name=dns"]},
	  {"key": "1/1", "revision": 1, "rule": {"endpointSelector": {}}, "namespace": "prod",
	  "labels": ["k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy", "k8s:io.cilium.k8s.policy.name=web", "k8s:io.cilium.k8s.policy.namespace=prod"]}]}`
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := newTestAgent(t, dir).start().rows()
	slices.SortFunc(rules, func(a, b *tables.PolicyRule) int { return strings.Compare(a.Key, b.Key) })
	if len(rules) != 2 || !rules[0].Clusterwide || rules[1].Clusterwide {
		t.Errorf("restored from an older file: %+v", rules)
	}
}
