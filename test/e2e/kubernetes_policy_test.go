package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
)

// Policies from the cluster, as an operator applies them: a
// CiliumNetworkPolicy, a NetworkPolicy and a CiliumClusterwideNetworkPolicy
// applied with kubectl are enforced on real TCP, UDP and ICMP between
// pods, and kubectl delete lifts them; objects the agent cannot enforce
// get a Warning event and a log line while the agent keeps serving (a
// refused update keeps the accepted version); after a restart the
// cluster's rules are what the API server holds, the API's untouched, and
// a pod started then never runs without them.
func TestKubernetesPolicies(t *testing.T) {
	setup(t)
	cluster := kubeCluster(t, "shop")
	const node = "node-1"
	a := startAgent(t, agentOpts{Extra: []string{"--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node}})
	waitCRDs(t, cluster)

	e := &policyEnv{t: t, a: a, n: newNetwork(t, a, "", nil)}
	mk := func(name, app string) *pod {
		kubePod(t, cluster, "shop", name, app, node)
		p := newPod(t, "shop", name)
		if err := e.n.add(p); err != nil {
			t.Fatalf("ADD %s: %v\n%s", name, err, a.Log(30))
		}
		return p
	}
	e.web, e.client, e.other = mk("web", "web"), mk("client", "client"), mk("other", "other")
	startServer(t, e.web, "8080", "8081")
	web := e.ip(e.web)
	open := func(when string) {
		t.Helper()
		t.Log(when)
		e.expect(
			tcpFact("client -> web:8080", e.client, web, "8080", true),
			udpFact("client -> web:8080", e.client, web, "8080", true),
			pingFact("client -> web", e.client, web, true),
			tcpFact("other -> web:8080", e.other, web, "8080", true),
		)
	}
	open("no policy: everything passes")

	// A CiliumNetworkPolicy: client may reach web on TCP 8080 and ping it.
	const webAllow = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps: [{fields: [{type: 8, family: IPv4}]}]
`
	cluster.Apply(t, webAllow)
	waitClusterPolicy(e, "web-allow", true)
	cnpOnly := func(when string) {
		t.Helper()
		t.Log(when)
		e.expect(
			tcpFact("client -> web:8080", e.client, web, "8080", true),
			tcpFact("client -> web:8081", e.client, web, "8081", false),
			udpFact("client -> web:8080", e.client, web, "8080", false),
			pingFact("client -> web", e.client, web, true),
			tcpFact("other -> web:8080", e.other, web, "8080", false),
			pingFact("other -> web", e.other, web, false),
		)
	}
	cnpOnly("CiliumNetworkPolicy web-allow")

	// A NetworkPolicy (policyTypes [Ingress]: its egress section, with a
	// named port, is ignored as upstream): other may send UDP 8080.
	cluster.Apply(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-udp, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
    ports: [{protocol: UDP, port: 8080}]
  egress:
  - ports: [{port: dns}]
`)
	waitClusterPolicy(e, "web-udp", true)
	e.expect(
		udpFact("other -> web:8080 (NetworkPolicy)", e.other, web, "8080", true),
		tcpFact("other -> web:8080", e.other, web, "8080", false),
		tcpFact("client -> web:8080 (CNP)", e.client, web, "8080", true),
		udpFact("client -> web:8080", e.client, web, "8080", false),
	)

	// kubectl delete lifts them, one at a time.
	cluster.Kubectl(t, "delete", "cnp", "-n", "shop", "web-allow")
	waitClusterPolicy(e, "web-allow", false)
	e.expect(
		tcpFact("client -> web:8080 (CNP deleted)", e.client, web, "8080", false),
		pingFact("client -> web (CNP deleted)", e.client, web, false),
		udpFact("other -> web:8080 (NetworkPolicy)", e.other, web, "8080", true),
	)
	cluster.Kubectl(t, "delete", "networkpolicy", "-n", "shop", "web-udp")
	waitClusterPolicy(e, "web-udp", false)
	open("both deleted: everything passes again")

	// A CiliumClusterwideNetworkPolicy: other may only reach web:8081.
	cluster.Apply(t, `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: other-egress}
spec:
  endpointSelector: {matchLabels: {app: other}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
`)
	waitClusterPolicy(e, "other-egress", true)
	e.expect(
		tcpFact("other -> web:8081 (CCNP)", e.other, web, "8081", true),
		tcpFact("other -> web:8080 (CCNP)", e.other, web, "8080", false),
		pingFact("other -> web (CCNP)", e.other, web, false),
		tcpFact("client -> web:8080", e.client, web, "8080", true),
	)
	cluster.Kubectl(t, "delete", "ccnp", "other-egress")
	waitClusterPolicy(e, "other-egress", false)
	open("CCNP deleted")

	// Bad input: refused with an event and a log line naming the field;
	// the agent keeps serving.
	cluster.Apply(t, strings.NewReplacer("web-allow", "bad-field", "fromEndpoints", "fromEndpoint").Replace(webAllow))
	cluster.Apply(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: http}]
`)
	waitRefused(t, cluster, a, "bad-field", `spec.ingress[0].fromEndpoint: unknown field`)
	waitRefused(t, cluster, a, "bad-port", `spec.ingress[0].ports[0].port: named port "http" is not supported`)
	open("refused objects are not applied")

	// A refused update keeps the accepted version.
	cluster.Apply(t, webAllow)
	waitClusterPolicy(e, "web-allow", true)
	cluster.Apply(t, strings.Replace(webAllow, `protocol: TCP}]}]`, `protocol: TCP}], rules: {http: [{method: GET}]}}]`, 1))
	waitRefused(t, cluster, a, "web-allow", `spec.ingress[0].toPorts[0].rules: L7 rules (http/dns/kafka) are not supported`)
	cnpOnly("an L7 update of web-allow was refused: the accepted version stays")
	cluster.Kubectl(t, "delete", "cnp", "-n", "shop", "bad-field")
	cluster.Kubectl(t, "delete", "networkpolicy", "-n", "shop", "bad-port")

	// Restart: a rule of the API stays; web-allow, deleted while the
	// agent is down, goes; only-other, created meanwhile, comes.
	var imported struct {
		Revision uint64 `json:"revision"`
	}
	if err := a.Client.DoRaw(ctxT(t), http.MethodPut, "/v1/policy", "application/yaml",
		[]byte(`[{endpointSelector: {matchLabels: {app: nothing}}, labels: [{key: from-api}], ingress: [{}]}]`), &imported); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	cluster.Kubectl(t, "delete", "cnp", "-n", "shop", "web-allow")
	cluster.Apply(t, strings.NewReplacer("web-allow", "only-other", "app: client", "app: other").Replace(webAllow))
	kubePod(t, cluster, "shop", "web-2", "web", node)
	a.Restart()

	// A pod started right after the restart is enforced from its first
	// packet: the policy engine waits for the cluster's policies.
	web2 := newPod(t, "shop", "web-2")
	if err := e.n.add(web2); err != nil {
		t.Fatalf("ADD web-2: %v\n%s", err, a.Log(30))
	}
	startServer(t, web2, "8080")
	e.expect(tcpFact("client -> web-2:8080, right after the restart", e.client, e.ip(web2), "8080", false))

	rev := waitClusterPolicy(e, "only-other", true)
	rules := policyRules(e)
	if slices.ContainsFunc(rules, func(r string) bool { return strings.Contains(r, "name=web-allow") }) ||
		!slices.ContainsFunc(rules, func(r string) bool { return strings.HasPrefix(r, "api ") && strings.Contains(r, "from-api") }) {
		t.Errorf("after the restart the rules are %v: want no web-allow and the API's from-api rule", rules)
	}
	e.waitRevision(rev)
	e.expect(
		tcpFact("other -> web:8080 (only-other)", e.other, web, "8080", true),
		tcpFact("other -> web-2:8080 (only-other)", e.other, e.ip(web2), "8080", true),
		tcpFact("client -> web:8080 (web-allow deleted while down)", e.client, web, "8080", false),
	)

	for _, p := range []*pod{e.web, e.client, e.other, web2} {
		if err := e.n.del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}

// policyRules lists the agent's rules as "SOURCE LABELS".
func policyRules(e *policyEnv) []string {
	e.t.Helper()
	resp, err := e.a.Client.GetPolicy(ctxT(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range resp.Rules {
		out = append(out, r.Source+" "+strings.Join(r.Labels, ","))
	}
	return out
}

// waitClusterPolicy waits until the agent holds (or no longer holds)
// rules of the cluster's object named name, and every endpoint enforces
// the revision; it returns that revision.
func waitClusterPolicy(e *policyEnv, name string, present bool) uint64 {
	e.t.Helper()
	var rev uint64
	e2eutil.Eventually(e.t, 30*time.Second, fmt.Sprintf("rules of %s present=%v", name, present), func() error {
		resp, err := e.a.Client.GetPolicy(ctxT(e.t))
		if err != nil {
			return err
		}
		found := slices.ContainsFunc(resp.Rules, func(r *models.PolicyRule) bool {
			return r.Source == "k8s" && slices.Contains(r.Labels, "k8s:io.cilium.k8s.policy.name="+name)
		})
		if found != present {
			return fmt.Errorf("revision %d, %d rules", resp.Revision, len(resp.Rules))
		}
		rev = resp.Revision
		return nil
	})
	e.waitRevision(rev)
	return rev
}

// waitRefused waits for the Warning event PolicyRefused on the object
// named name, naming the field, and for the agent's log line.
func waitRefused(t *testing.T, cluster *kubetest.Cluster, a *agent, name, field string) {
	t.Helper()
	e2eutil.Eventually(t, 30*time.Second, "a PolicyRefused event on "+name, func() error {
		out, _, err := cluster.KubectlErr("get", "events", "-A", "--field-selector", "involvedObject.name="+name+",reason=PolicyRefused,type=Warning",
			"-o", "jsonpath={.items[*].message}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, field) {
			return fmt.Errorf("events: %q", out)
		}
		return nil
	})
	lines := grepLines(a.Log(1<<20), "policy refused")
	if !strings.Contains(lines, name) || !strings.Contains(lines, strings.SplitN(field, ":", 2)[0]) {
		t.Errorf("no log line naming %s and %s:\n%s", name, field, lines)
	}
}
