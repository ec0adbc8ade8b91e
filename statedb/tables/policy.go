package tables

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/datapath/maps"
	policyapi "github.com/membrane-net/membrane/policy/api"
)

// PolicyRule is one imported rule, with the revision that imported it.
// Written by the policy repository (PUT/DELETE /v1/policy); read by the
// policy engine.
type PolicyRule struct {
	// Key is unique per rule: "<import revision>/<index in the import>".
	Key      string         `json:"key"`
	Rule     policyapi.Rule `json:"rule"`
	Revision uint64         `json:"revision"`
	// Namespace is set for rules of a CiliumNetworkPolicy: the rule
	// applies to endpoints of that namespace only, and its peer selectors
	// are narrowed to it unless they name the namespace or namespace
	// labels themselves (as Cilium translates a CNP).
	Namespace string `json:"namespace,omitempty"`
	// Clusterwide is set for rules of a CiliumClusterwideNetworkPolicy:
	// their peer selectors select only endpoints that have a namespace
	// (as Cilium translates a CCNP). Plain rules have neither.
	Clusterwide bool `json:"clusterwide,omitempty"`
	// Labels are the rule's labels as "source:key=value" (for DELETE).
	Labels []string `json:"labels,omitempty"`
	// Source is where the rule came from: PolicySourceAPI (PUT
	// /v1/policy, `membrane policy import`) or PolicySourceK8s (an object
	// of the cluster, written by the Kubernetes policy watcher). Each
	// source replaces and deletes only its own rules.
	Source string `json:"source"`
}

// Sources of policy rules.
const (
	PolicySourceAPI = "api"
	PolicySourceK8s = "k8s"
)

func (r *PolicyRule) TableHeader() []string {
	return []string{"Key", "Revision", "Source", "Namespace", "Labels", "Description"}
}
func (r *PolicyRule) TableRow() []string {
	return []string{r.Key, strconv.FormatUint(r.Revision, 10), r.Source, r.Namespace, strings.Join(r.Labels, ","), r.Rule.Description}
}

// PolicyRuleKeyIndex is the primary index.
var PolicyRuleKeyIndex = statedb.Index[*PolicyRule, string]{
	Name:       "key",
	FromObject: func(r *PolicyRule) index.KeySet { return index.NewKeySet(index.String(r.Key)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// PolicyRuleLabelIndex finds rules by one of their labels.
var PolicyRuleLabelIndex = statedb.Index[*PolicyRule, string]{
	Name:       "label",
	FromObject: func(r *PolicyRule) index.KeySet { return index.StringSlice(r.Labels) },
	FromKey:    index.String,
	FromString: index.FromString,
}

func NewPolicyRulesTable(db *statedb.DB) (statedb.RWTable[*PolicyRule], error) {
	return statedb.NewTable(db, "policy-rules", PolicyRuleKeyIndex, PolicyRuleLabelIndex)
}

// PolicyRevision is the policy revision, in a table of one row that the
// policy repository writes in the same transaction as the rules it
// numbers (every import and delete). Written by the policy repository;
// read by the policy engine (the revision its endpoint-policy rows
// report) and by GET /v1/policy.
//
// Why a table of its own and not a column of the rules: a delete leaves
// the remaining rows untouched (and may leave none), and rewriting every
// rule under each new revision would make the engine recompile them all.
// One row that changes with every write of the rules gives the engine a
// consistent pair instead: the rules it has processed, and their revision.
type PolicyRevision struct {
	// Revision is 0 before any policy was imported, one more after every
	// import or delete.
	Revision uint64 `json:"revision"`
	// RulesRevision is the policy-rules table's statedb revision once this
	// policy revision's rules are written (the last revision that
	// transaction gave a rule). A reader that follows the rules with a
	// change iterator has processed every rule of this policy revision
	// once it has processed a change at or above RulesRevision: it may see
	// this row a moment before the iterator returns those changes (the
	// iterator lags the read transaction), and must then keep reporting
	// the previous revision.
	RulesRevision statedb.Revision `json:"rules-revision"`
}

// PolicyRevisionKey is the key of the policy-revision table's one row.
const PolicyRevisionKey = "policy"

func (r *PolicyRevision) TableHeader() []string { return []string{"Revision", "RulesRevision"} }
func (r *PolicyRevision) TableRow() []string {
	return []string{strconv.FormatUint(r.Revision, 10), strconv.FormatUint(r.RulesRevision, 10)}
}

// PolicyRevisionIndex is the primary index: every row has the key
// PolicyRevisionKey, so the table holds at most one.
var PolicyRevisionIndex = statedb.Index[*PolicyRevision, string]{
	Name:       "key",
	FromObject: func(*PolicyRevision) index.KeySet { return index.NewKeySet(index.String(PolicyRevisionKey)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// CurrentPolicyRevision returns the table's row (nil before one is
// written) and a channel that closes when it changes.
func CurrentPolicyRevision(tbl statedb.Table[*PolicyRevision], txn statedb.ReadTxn) (*PolicyRevision, <-chan struct{}) {
	row, _, watch, _ := tbl.GetWatch(txn, PolicyRevisionIndex.Query(PolicyRevisionKey))
	return row, watch
}

func NewPolicyRevisionTable(db *statedb.DB) (statedb.RWTable[*PolicyRevision], error) {
	return statedb.NewTable(db, "policy-revision", PolicyRevisionIndex)
}

// PolicyKey is what one policy entry matches: a direction, a peer
// identity (0: any peer), a protocol (0: any) and a port range
// [Port, EndPort] (both 0: all ports; ICMP types are ports of
// protocol ICMP/ICMPv6).
type PolicyKey struct {
	Direction uint8           `json:"direction"`
	Identity  NumericIdentity `json:"identity"`
	Protocol  uint8           `json:"protocol"`
	Port      uint16          `json:"port"`
	EndPort   uint16          `json:"end-port"`
}

func (k PolicyKey) String() string {
	ports := "any"
	switch {
	case k.Port == 0 && k.EndPort == 0:
	case k.EndPort == 0 || k.EndPort == k.Port:
		ports = strconv.Itoa(int(k.Port))
	default:
		ports = fmt.Sprintf("%d-%d", k.Port, k.EndPort)
	}
	return fmt.Sprintf("%s identity=%d proto=%d port=%s", maps.DirectionName(k.Direction), k.Identity, k.Protocol, ports)
}

// PolicyEntry is one computed allow or deny.
type PolicyEntry struct {
	Key  PolicyKey `json:"key"`
	Deny bool      `json:"deny,omitempty"`
	// RuleKeys name the rules that produced the entry (for tracing).
	RuleKeys []string `json:"rules,omitempty"`
}

// EndpointPolicy is the computed policy of one endpoint: what the policy
// engine derived from the rules that select the endpoint's identity.
// Reconciled by the loader into the endpoint's slice of the policy map.
type EndpointPolicy struct {
	EndpointID uint16          `json:"endpoint-id"`
	Identity   NumericIdentity `json:"identity"`
	// Revision is the policy revision the entries reflect.
	Revision        uint64        `json:"revision"`
	IngressEnforced bool          `json:"ingress-enforced"`
	EgressEnforced  bool          `json:"egress-enforced"`
	Entries         []PolicyEntry `json:"entries"`

	Status reconciler.Status `json:"status"`
}

func (p *EndpointPolicy) Clone() *EndpointPolicy { p2 := *p; return &p2 }

func (p *EndpointPolicy) GetStatus() reconciler.Status { return p.Status }
func (p *EndpointPolicy) SetStatus(s reconciler.Status) *EndpointPolicy {
	p.Status = s
	return p
}

// SameDesired reports whether two rows ask for the same datapath state.
func (p *EndpointPolicy) SameDesired(o *EndpointPolicy) bool {
	return p.EndpointID == o.EndpointID && p.Identity == o.Identity &&
		p.IngressEnforced == o.IngressEnforced && p.EgressEnforced == o.EgressEnforced &&
		slices.EqualFunc(p.Entries, o.Entries, func(a, b PolicyEntry) bool { return a.Key == b.Key && a.Deny == b.Deny })
}

func (p *EndpointPolicy) TableHeader() []string {
	return []string{"Endpoint", "Identity", "Revision", "Ingress", "Egress", "Entries", "Status"}
}
func (p *EndpointPolicy) TableRow() []string {
	enf := func(b bool) string {
		if b {
			return "enforced"
		}
		return "allow-all"
	}
	return []string{strconv.Itoa(int(p.EndpointID)), strconv.FormatUint(uint64(p.Identity), 10),
		strconv.FormatUint(p.Revision, 10), enf(p.IngressEnforced), enf(p.EgressEnforced),
		strconv.Itoa(len(p.Entries)), p.Status.String()}
}

// EndpointPolicyIndex is the primary index.
var EndpointPolicyIndex = statedb.Index[*EndpointPolicy, uint16]{
	Name:       "endpoint",
	FromObject: func(p *EndpointPolicy) index.KeySet { return index.NewKeySet(index.Uint16(p.EndpointID)) },
	FromKey:    index.Uint16,
	FromString: index.Uint16String,
	Unique:     true,
}

// EndpointPolicyPendingIndex finds the rows the reconciler has not
// written into the datapath yet (status Pending): regeneration waits for
// the older ones before it reports an endpoint ready. Only pending rows
// are in it (Query(true)); Query(false) finds none: a row reconciled,
// what nearly every row is, costs no entry (a leaf and its watch channel,
// about 0.2 KiB per endpoint).
var EndpointPolicyPendingIndex = statedb.Index[*EndpointPolicy, bool]{
	Name: "pending",
	FromObject: func(p *EndpointPolicy) index.KeySet {
		if p.Status.Kind != reconciler.StatusKindPending {
			return index.NewKeySet()
		}
		return index.NewKeySet(index.Bool(true))
	},
	FromKey:    index.Bool,
	FromString: index.BoolString,
}

func NewEndpointPolicyTable(db *statedb.DB) (statedb.RWTable[*EndpointPolicy], error) {
	return statedb.NewTable(db, "endpoint-policy", EndpointPolicyIndex, EndpointPolicyPendingIndex)
}

// PolicyComputed is provided by a cell that computes endpoint-policy rows
// (the policy engine). When an agent has one, regeneration waits for each
// endpoint's row before the endpoint is ready; an agent built without a
// policy engine runs its endpoints without policy enforcement.
type PolicyComputed struct{}
