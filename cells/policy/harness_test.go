package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	datapath "github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// testEngine is the policy cell on the agent's infrastructure (celltest)
// and nothing else: tests write rules, identities and endpoints rows as
// the other cells would, and read what the engine wrote.
type testEngine struct {
	h          *celltest.Hive
	db         *statedb.DB
	rules      statedb.RWTable[*tables.PolicyRule]
	revision   statedb.RWTable[*tables.PolicyRevision]
	identities statedb.RWTable[*tables.Identity]
	endpoints  statedb.RWTable[*tables.Endpoint]
	ipcache    statedb.RWTable[*tables.IPCacheEntry]
	policy     statedb.RWTable[*tables.EndpointPolicy]
	c          *controller

	// rulesRestored completes the policy-rules table's initialization
	// (set when the engine was built with a pending repository restore).
	rulesRestored func(statedb.WriteTxn)
}

// newTestEngine builds (does not start) the engine on a fresh state
// directory. With holdRules the policy-rules table has a pending
// initializer, as while the repository restores rules.
func newTestEngine(t testing.TB, cfg Config, holdRules bool, extra ...cell.Cell) *testEngine {
	return newTestEngineIn(t, "", cfg, holdRules, extra...)
}

// newTestEngineIn is newTestEngine on the state directory stateDir.
func newTestEngineIn(t testing.TB, stateDir string, cfg Config, holdRules bool, extra ...cell.Cell) *testEngine {
	e := &testEngine{}
	cells := []cell.Cell{
		Cell,
		cell.Invoke(func(db *statedb.DB, r statedb.RWTable[*tables.PolicyRule], rev statedb.RWTable[*tables.PolicyRevision],
			i statedb.RWTable[*tables.Identity], ep statedb.RWTable[*tables.Endpoint], ipc statedb.RWTable[*tables.IPCacheEntry],
			pol statedb.RWTable[*tables.EndpointPolicy], c *controller) {
			e.db, e.rules, e.revision, e.identities, e.endpoints, e.ipcache, e.policy, e.c = db, r, rev, i, ep, ipc, pol, c
			if holdRules {
				wtxn := db.WriteTxn(r)
				e.rulesRestored = r.RegisterInitializer(wtxn, "test-repository-restore")
				wtxn.Commit()
			}
		}),
	}
	e.h = celltest.New(t, stateDir, append(cells, extra...)...)
	if cfg != (Config{}) { // zero: the flags decide
		hive.AddConfigOverride(e.h.Hive, func(c *Config) { *c = cfg })
	}
	return e
}

// startTestEngine builds and starts the engine; it stops with the test.
func startTestEngine(t testing.TB, cfg Config) *testEngine {
	e := newTestEngine(t, cfg, false)
	e.h.StartTest()
	return e
}

// sync waits until the engine has processed every change made so far.
// No timing is asserted: the deadline only turns a hang into a failure.
func (e *testEngine) sync(t testing.TB) {
	t.Helper()
	txn := e.db.ReadTxn()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.c.progress.wait(ctx, e.c.inputRevisions(txn)); err != nil {
		t.Fatalf("policy engine did not catch up: %v (health: %s)", err, e.healthString())
	}
}

func (e *testEngine) healthString() string {
	level, status := e.engineHealth()
	return fmt.Sprintf("%s: %s", level, status)
}

// engineHealth returns the level and status the engine's job reported.
func (e *testEngine) engineHealth() (cell.Level, string) {
	r, ok := e.h.HealthOf("policy.job-policy-engine")
	if !ok {
		return cell.StatusUnknown, ""
	}
	status := r.Message
	if r.Error != nil {
		status += ": " + r.Error.Error()
	}
	return r.Level, status
}

func (e *testEngine) addRules(t testing.TB, rs ...*tables.PolicyRule) {
	celltest.Insert(t, e.db, e.rules, rs...)
}

func (e *testEngine) deleteRule(t testing.TB, key string) {
	celltest.Delete(t, e.db, e.rules, &tables.PolicyRule{Key: key})
}

func (e *testEngine) addIdentities(t testing.TB, ids ...*tables.Identity) {
	celltest.Insert(t, e.db, e.identities, ids...)
}

func (e *testEngine) deleteIdentity(t testing.TB, id tables.NumericIdentity) {
	celltest.Delete(t, e.db, e.identities, &tables.Identity{ID: id})
}

func (e *testEngine) addEndpoints(t testing.TB, eps ...*tables.Endpoint) {
	celltest.Insert(t, e.db, e.endpoints, eps...)
}

func (e *testEngine) deleteEndpoint(t testing.TB, id uint16) {
	celltest.Delete(t, e.db, e.endpoints, &tables.Endpoint{ID: id})
}

// row returns an endpoint's policy row.
func (e *testEngine) row(id uint16) (*tables.EndpointPolicy, bool) {
	row, _, ok := e.policy.Get(e.db.ReadTxn(), tables.EndpointPolicyIndex.Query(id))
	return row, ok
}

// trace posts a trace request to the engine's route.
func (e *testEngine) trace(t testing.TB, req models.PolicyTraceRequest) (int, *models.PolicyTraceResponse, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	code, data := e.h.Request(http.MethodPost, "/v1/policy/trace", string(body))
	if code != http.StatusOK {
		return code, nil, string(data)
	}
	var resp models.PolicyTraceResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		t.Fatalf("trace answer: %v: %s", err, data)
	}
	return code, &resp, string(data)
}

// --- builders ---

func ls(ss ...string) labels.Labels {
	out, err := labels.ParseList(ss, labels.SourceK8s)
	if err != nil {
		panic(err)
	}
	return out
}

func ident(id tables.NumericIdentity, ss ...string) *tables.Identity {
	return &tables.Identity{ID: id, Labels: ls(ss...)}
}

// reserved returns the rows of the reserved identities, as the identity
// allocator publishes them.
func reserved() []*tables.Identity {
	var out []*tables.Identity
	for id, name := range tables.ReservedIdentities {
		out = append(out, &tables.Identity{ID: id, Labels: labels.New(labels.Label{Source: labels.SourceReserved, Key: name}), Reserved: true})
	}
	slices.SortFunc(out, func(a, b *tables.Identity) int { return int(a.ID) - int(b.ID) })
	return out
}

func endpoint(id uint16, identity tables.NumericIdentity) *tables.Endpoint {
	return &tables.Endpoint{ID: id, Identity: identity, State: tables.StateReady, LabelsResolved: true}
}

func rule(key string, rev uint64, r policyapi.Rule) *tables.PolicyRule {
	return &tables.PolicyRule{Key: key, Revision: rev, Rule: r}
}

func sel(kv ...string) *policyapi.EndpointSelector {
	s := policyapi.EndpointSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return &s
}

func esel(kv ...string) policyapi.EndpointSelector { return *sel(kv...) }

func tcp(port string) policyapi.PortRule {
	return policyapi.PortRule{Ports: []policyapi.PortProtocol{{Port: port, Protocol: "TCP"}}}
}

func boolp(b bool) *bool { return &b }

// entry is a compact way to write an expected entry:
// "in 256 tcp 80", "eg 0 any", "in 2 udp 1000-2000 deny".
func entry(s string) tables.PolicyEntry {
	f := strings.Fields(s)
	var e tables.PolicyEntry
	if f[0] == "eg" {
		e.Key.Direction = datapath.DirEgress
	}
	var id uint64
	fmt.Sscan(f[1], &id)
	e.Key.Identity = tables.NumericIdentity(id)
	switch f[2] {
	case "tcp":
		e.Key.Protocol = datapath.ProtoTCP
	case "udp":
		e.Key.Protocol = datapath.ProtoUDP
	case "sctp":
		e.Key.Protocol = datapath.ProtoSCTP
	case "icmp":
		e.Key.Protocol = datapath.ProtoICMP
	case "icmpv6":
		e.Key.Protocol = datapath.ProtoICMPv6
	}
	rest := f[3:]
	if len(rest) > 0 && rest[0] != "deny" {
		var lo, hi uint16
		if n, _ := fmt.Sscanf(rest[0], "%d-%d", &lo, &hi); n == 2 {
			e.Key.Port, e.Key.EndPort = lo, hi
		} else {
			fmt.Sscan(rest[0], &lo)
			e.Key.Port, e.Key.EndPort = lo, lo
		}
		rest = rest[1:]
	}
	e.Deny = len(rest) > 0 && rest[0] == "deny"
	return e
}

// keysOf renders entries (without rule keys) for comparison.
func keysOf(es []tables.PolicyEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = formatEntry(e)
	}
	return out
}

func formatEntry(e tables.PolicyEntry) string {
	dir := "in"
	if e.Key.Direction == datapath.DirEgress {
		dir = "eg"
	}
	proto := map[uint8]string{0: "any", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}[e.Key.Protocol]
	s := fmt.Sprintf("%s %d %s", dir, e.Key.Identity, proto)
	switch {
	case e.Key.Port == 0 && e.Key.EndPort == 0:
	case e.Key.EndPort == 0 || e.Key.EndPort == e.Key.Port:
		s += fmt.Sprintf(" %d", e.Key.Port)
	default:
		s += fmt.Sprintf(" %d-%d", e.Key.Port, e.Key.EndPort)
	}
	if e.Deny {
		s += " deny"
	}
	return s
}

func expectEntries(t testing.TB, got []tables.PolicyEntry, want ...string) {
	t.Helper()
	w := make([]string, len(want))
	for i, s := range want {
		w[i] = formatEntry(entry(s))
	}
	if g := keysOf(got); !slices.Equal(g, w) {
		t.Errorf("entries:\n got  %q\n want %q", g, w)
	}
}
