package metrics

import (
	"github.com/cilium/statedb"
	"github.com/prometheus/client_golang/prometheus"

	agentmetrics "github.com/membrane-net/membrane/metrics"
	"github.com/membrane-net/membrane/statedb/tables"
)

var (
	endpointsDesc = prometheus.NewDesc(agentmetrics.Namespace+"_endpoints",
		"Endpoints by lifecycle state (every state is listed, 0 when none is in it)",
		[]string{agentmetrics.LabelState}, nil)
	identitiesDesc = prometheus.NewDesc(agentmetrics.Namespace+"_identities",
		"Security identities by kind: reserved, local (this agent's allocator), cluster (CiliumIdentity objects), cidr (node-local, for CIDR rules)",
		[]string{agentmetrics.LabelKind}, nil)
	policyRevisionDesc = prometheus.NewDesc(agentmetrics.Namespace+"_policy_revision",
		"The policy repository's revision: 0 before any import, one more with every change",
		nil, nil)
	policyRulesDesc = prometheus.NewDesc(agentmetrics.Namespace+"_policy_rules",
		"Policy rules in the repository, by source (api, k8s)",
		[]string{agentmetrics.LabelSource}, nil)
)

// identityKinds are the values of the kind label, all always reported.
var identityKinds = []string{"reserved", "local", "cluster", "cidr"}

// tablesCollector counts rows of the tables on each scrape: one read
// transaction, a walk over endpoints and identities (thousands of rows
// take well under a millisecond, docs/metrics.md).
type tablesCollector struct {
	db         *statedb.DB
	endpoints  statedb.Table[*tables.Endpoint]
	identities statedb.Table[*tables.Identity]
	revisions  statedb.Table[*tables.PolicyRevision]
	rules      statedb.Table[*tables.PolicyRule]
}

func (c *tablesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- endpointsDesc
	ch <- identitiesDesc
	ch <- policyRevisionDesc
	ch <- policyRulesDesc
}

func (c *tablesCollector) Collect(ch chan<- prometheus.Metric) {
	txn := c.db.ReadTxn()

	byState := map[tables.EndpointState]int{}
	for ep := range c.endpoints.All(txn) {
		byState[ep.State]++
	}
	for _, s := range tables.States() {
		ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(byState[s]), string(s))
	}

	byKind := map[string]int{}
	for id := range c.identities.All(txn) {
		byKind[identityKind(id)]++
	}
	for _, k := range identityKinds {
		ch <- prometheus.MustNewConstMetric(identitiesDesc, prometheus.GaugeValue, float64(byKind[k]), k)
	}

	var rev uint64
	if row, _ := tables.CurrentPolicyRevision(c.revisions, txn); row != nil {
		rev = row.Revision
	}
	ch <- prometheus.MustNewConstMetric(policyRevisionDesc, prometheus.GaugeValue, float64(rev))

	bySource := map[string]int{tables.PolicySourceAPI: 0, tables.PolicySourceK8s: 0}
	for r := range c.rules.All(txn) {
		bySource[r.Source]++
	}
	for src, n := range bySource {
		ch <- prometheus.MustNewConstMetric(policyRulesDesc, prometheus.GaugeValue, float64(n), src)
	}
}

// identityKind is the kind label of an identity.
func identityKind(id *tables.Identity) string {
	switch {
	case id.Reserved:
		return "reserved"
	case id.ID&tables.LocalIdentityFlag != 0:
		return "cidr"
	case id.Source == "cluster":
		return "cluster"
	default:
		return "local"
	}
}
