package policyrepo_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// parsed is the rules of one policy document, as a watcher hands them.
func parsed(t *testing.T, doc string) (api.ObjectRef, []api.ParsedRule) {
	t.Helper()
	rules, err := api.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return *rules[0].Object, rules
}

// summary lists the rows as "source object-name:rule-count", sorted.
func (a *testAgent) summary() []string {
	count := map[string]int{}
	for _, r := range a.rows() {
		name := "plain"
		for _, l := range r.Labels {
			if v, ok := strings.CutPrefix(l, "k8s:"+api.PolicyLabelName+"="); ok {
				name = v
			}
		}
		count[r.Source+" "+name]++
	}
	var out []string
	for k, n := range count {
		out = append(out, fmt.Sprintf("%s:%d", k, n))
	}
	slices.Sort(out)
	return out
}

// The cluster's rules (source k8s) and the API's (source api) live side
// by side: each source replaces and deletes only its own, a set of the
// same objects writes nothing, and pruning converges the source to the
// objects given while keeping those marked to keep.
func TestSetObjectsPerSource(t *testing.T) {
	dir := t.TempDir()
	a := newTestAgent(t, dir).start()
	a.expect("PUT", webCNP, 200) // rev 1: api prod/web, 2 rules
	web, webRules := parsed(t, webCNPv2)
	other, otherRules := parsed(t, strings.Replace(webCNPv2, "name: web", "name: other", 1))

	check := func(when string, want ...string) {
		t.Helper()
		if got := a.summary(); !slices.Equal(got, want) {
			t.Errorf("%s: rows %v, want %v", when, got, want)
		}
	}
	set := func(objs policyrepo.Objects, prune bool, wantChanged bool) uint64 {
		t.Helper()
		rev, changed, err := a.repo.SetObjects(tables.PolicySourceK8s, objs, prune)
		if err != nil || changed != wantChanged {
			t.Fatalf("SetObjects: changed %v, error %v; want changed %v", changed, err, wantChanged)
		}
		return rev
	}

	if rev := set(policyrepo.Objects{web: webRules, other: otherRules}, true, true); rev != 2 {
		t.Errorf("revision %d, want 2", rev)
	}
	check("after the cluster's objects", "api web:2", "k8s other:1", "k8s web:1")
	if rev := set(policyrepo.Objects{web: webRules, other: otherRules}, true, false); rev != 2 {
		t.Errorf("the same objects again moved the revision to %d", rev)
	}

	// The API replaces its own prod/web, not the cluster's.
	a.expect("PUT", webCNPv2, 200) // rev 3
	check("after an API import of the same object", "api web:1", "k8s other:1", "k8s web:1")

	// An object's update replaces its rules; an empty list removes them.
	set(policyrepo.Objects{other: webRules[:0]}, false, true) // rev 4
	check("after deleting other", "api web:1", "k8s web:1")

	// DELETE /v1/policy (no labels: everything) is the API's rules only.
	a.expect("DELETE", "", 200) // rev 5
	check("after DELETE /v1/policy", "k8s web:1")
	a.expect("DELETE", "", 404)

	// A restart keeps the sources; pruning with prod/web kept (a refused
	// update) and nothing else removes only what the cluster no longer has.
	set(policyrepo.Objects{other: otherRules}, false, true) // rev 6
	a.stop()
	a = newTestAgent(t, dir).start()
	check("after a restart", "k8s other:1", "k8s web:1")
	if rev := set(policyrepo.Objects{web: nil}, true, true); rev != 7 {
		t.Errorf("prune: revision %d, want 7", rev)
	}
	check("after pruning", "k8s web:1")
	if got := a.list(); len(got.Rules) != 1 || got.Rules[0].Source != tables.PolicySourceK8s {
		t.Errorf("GET /v1/policy: %+v, want the one k8s rule", got.Rules)
	}
}
