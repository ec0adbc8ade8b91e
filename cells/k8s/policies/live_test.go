package policies_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/policies"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

type env struct {
	db     *statedb.DB
	rules  statedb.Table[*tables.PolicyRule]
	status statedb.Table[*tables.K8sStatus]
	repo   *policyrepo.Repository
}

// newHive is the policy repository, with the Kubernetes policy watcher
// pointed at cluster when cluster is not nil.
func newHive(t *testing.T, dir string, cluster *kubetest.Cluster) (*celltest.Hive, *env) {
	e := &env{}
	cs := []cell.Cell{policyrepo.Cell, cell.Invoke(func(db *statedb.DB, r statedb.Table[*tables.PolicyRule], s statedb.Table[*tables.K8sStatus], repo *policyrepo.Repository) {
		e.db, e.rules, e.status, e.repo = db, r, s, repo
	})}
	if cluster != nil {
		cs = append(cs, k8scell.Cell, policies.Cell)
	}
	h := celltest.New(t, dir, cs...)
	if cluster != nil {
		hive.AddConfigOverride(h.Hive, func(c *k8scell.Config) { c.K8sKubeconfig, c.NodeName = cluster.Kubeconfig(), "node-1" })
	}
	return h, e
}

// names lists the rules of a txn as "SOURCE NAME" (NAME: the object's, or
// the rule's description).
func (e *env) names(txn statedb.ReadTxn) []string {
	var out []string
	for r := range e.rules.All(txn) {
		name := r.Rule.Description
		for _, l := range r.Labels {
			if v, ok := strings.CutPrefix(l, "k8s:"+api.PolicyLabelName+"="); ok {
				name = v
			}
		}
		out = append(out, r.Source+" "+name)
	}
	slices.Sort(out)
	return out
}

func (e *env) statusOf(name string) *tables.K8sStatus {
	row, _, _ := e.status.Get(e.db.ReadTxn(), tables.K8sStatusNameIndex.Query(name))
	return row
}

const webCNP = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
`

// Against a real API server: while the cluster's policies are not known
// (the API server is down at start) the rules table stays uninitialized,
// so the policy engine computes nothing; every transaction that sees it
// initialized sees the rules converged to the cluster (a rule of an
// object deleted while the agent was down gone, the API's kept); then
// events apply and a refusal is recorded in k8s-status.
func TestStartWaitsForTheClusterPolicies(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real API server: skipped with -short")
	}
	cluster := kubetest.Start(t)
	cluster.Kubectl(t, "apply", "-f", "../../../install/kubernetes/crds")
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/ciliumnetworkpolicies.cilium.io", "crd/ciliumclusterwidenetworkpolicies.cilium.io")
	cluster.Apply(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n"+webCNP)

	// What the agent had before its restart: the cluster's prod/stale
	// (deleted since) and a rule of the API.
	dir := t.TempDir()
	h, e := newHive(t, dir, nil)
	h.StartTest()
	stale, err := api.Parse([]byte(strings.Replace(webCNP, "name: web", "name: stale", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.repo.SetObjects(tables.PolicySourceK8s, policyrepo.Objects{*stale[0].Object: stale}, false); err != nil {
		t.Fatal(err)
	}
	plain, _ := api.Parse([]byte(`{"endpointSelector": {}, "description": "from-api", "ingress": [{}]}`))
	if _, _, err := e.repo.Import(plain); err != nil {
		t.Fatal(err)
	}
	h.StopTest()

	cluster.StopAPIServer()
	h, e = newHive(t, dir, cluster)
	h.StartTest()
	// (client-go's watch-list retries an unreachable server without
	// reporting to the watch error handler: the probe's row says it.)
	e2eutil.Eventually(t, time.Minute, "the API server found unreachable", func() error {
		if row := e.statusOf(tables.K8sAPIServer); row == nil || row.LastError == "" {
			return fmt.Errorf("k8s-status row %+v", row)
		}
		return nil
	})
	txn := e.db.ReadTxn()
	if ok, _ := e.rules.Initialized(txn); ok || !slices.Contains(e.rules.PendingInitializers(txn), "k8s-policies") {
		t.Fatalf("API server down: policy-rules initialized %v, pending %v; want k8s-policies pending", ok, e.rules.PendingInitializers(txn))
	}

	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	want := []string{"api from-api", "k8s web"}
	e2eutil.Eventually(t, time.Minute, "policy-rules initialized", func() error {
		txn := e.db.ReadTxn()
		if ok, _ := e.rules.Initialized(txn); !ok {
			return fmt.Errorf("pending %v", e.rules.PendingInitializers(txn))
		}
		if got := e.names(txn); !slices.Equal(got, want) {
			t.Fatalf("initialized with rules %v, want %v", got, want)
		}
		return nil
	})

	// Events: a refused object leaves the rules alone and says why in
	// k8s-status; a delete removes the object's rules.
	cluster.Apply(t, strings.Replace(strings.Replace(webCNP, "name: web", "name: bad", 1), "fromEndpoints", "fromEndpoint", 1))
	e2eutil.Eventually(t, time.Minute, "the refusal in k8s-status", func() error {
		if row := e.statusOf(policies.ResourceCNP); !strings.Contains(row.LastError, `CiliumNetworkPolicy "prod/bad": spec.ingress[0].fromEndpoint: unknown field`) {
			return fmt.Errorf("last error %q", row.LastError)
		}
		return nil
	})
	cluster.Kubectl(t, "delete", "cnp", "-n", "prod", "web")
	e2eutil.Eventually(t, time.Minute, "prod/web's rules removed", func() error {
		if got := e.names(e.db.ReadTxn()); !slices.Equal(got, []string{"api from-api"}) {
			return fmt.Errorf("rules %v", got)
		}
		return nil
	})
}
