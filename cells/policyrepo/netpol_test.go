package policyrepo_test

import (
	"fmt"
	"strings"
	"testing"
)

// A Kubernetes NetworkPolicy goes through the repository as a CNP does: a
// re-import of the same object replaces its rule (and not the rules of a
// CiliumNetworkPolicy of the same name), a restart keeps it as imported
// (its namespace and its deny-all `ingress: [{}]` included), DELETE by its
// derived labels removes it, and an unsupported field is a 400 naming it.
func TestNetworkPolicyImport(t *testing.T) {
	np := func(ingress string) string {
		return `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: ` + ingress + "\n"
	}
	dir := t.TempDir()
	a := newTestAgent(t, dir).start()
	a.expect("PUT", webCNP, 200)                                                   // rev 1: CNP prod/web, 2 rules
	a.expect("PUT", np(`[{from: [{podSelector: {}}], ports: [{port: 80}]}]`), 200) // rev 2
	if out := a.expect("PUT", np(`[]`), 200); num(out["revision"]) != 3 || num(out["rules"]) != 1 {
		t.Fatalf("re-import answered %v", out)
	}
	check := func(when string, rows int) {
		t.Helper()
		var nps []string
		n := 0
		for _, r := range a.rows() {
			n++
			if strings.Contains(strings.Join(r.Labels, ","), "derived-from=NetworkPolicy") {
				nps = append(nps, fmt.Sprintf("%s ns=%s ingress=%d egress=%d", r.Key, r.Namespace, len(r.Rule.Ingress), len(r.Rule.Egress)))
				if len(r.Rule.Ingress) == 1 && len(r.Rule.Ingress[0].FromEndpoints)+len(r.Rule.Ingress[0].FromEntities) != 0 {
					t.Errorf("%s: rule %s still allows peers", when, r.Key)
				}
			}
		}
		if n != rows || len(nps) != 1 || nps[0] != "3/0 ns=prod ingress=1 egress=0" {
			t.Errorf("%s: %d rows, NetworkPolicy rules %v; want %d rows and [3/0 ns=prod ingress=1 egress=0]", when, n, nps, rows)
		}
	}
	check("after the re-import", 3)

	a.stop()
	a = newTestAgent(t, dir).start()
	check("after a restart", 3)

	out := a.expect("PUT", strings.Replace(np(`[{ports: [{port: http}]}]`), "name: web", "name: named", 1), 400)
	if msg, _ := out["message"].(string); !strings.Contains(msg, `NetworkPolicy "prod/named": spec.ingress[0].ports[0].port: named port "http" is not supported`) {
		t.Errorf("named port answered %v", out)
	}

	a.expect("DELETE", `{"labels": ["k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy", "k8s:io.cilium.k8s.policy.namespace=prod", "k8s:io.cilium.k8s.policy.name=web"]}`, 200)
	if rows := a.rows(); len(rows) != 2 {
		t.Errorf("after DELETE: %d rows, want the CNP's 2", len(rows))
	}
}
