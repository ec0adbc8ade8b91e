package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/infrastructure"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/policy"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
	"github.com/membrane-net/membrane/labels"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// db is what the benchmarks read and write of an in-process hive.
type db struct {
	DB         *statedb.DB
	Identities statedb.RWTable[*tables.Identity]
	Rules      statedb.RWTable[*tables.PolicyRule]
	Endpoints  statedb.RWTable[*tables.Endpoint]
	Policy     statedb.Table[*tables.EndpointPolicy]
}

func captureDB(d *db) cell.Cell {
	return cell.Invoke(func(sdb *statedb.DB, ids statedb.RWTable[*tables.Identity], rules statedb.RWTable[*tables.PolicyRule],
		eps statedb.RWTable[*tables.Endpoint], pol statedb.Table[*tables.EndpointPolicy]) {
		*d = db{sdb, ids, rules, eps, pol}
	})
}

func startHive(b *testing.B, h *hive.Hive) {
	b.Helper()
	log := hivetest.Logger(b, hivetest.LogLevel(slog.LevelWarn))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(log, ctx); err != nil {
		b.Fatalf("starting the hive: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		h.Stop(log, ctx)
	})
}

const (
	scaleIdentities = 10000
	scaleRules      = 1000
	scaleSamples    = 20
)

// scaleIdentity is the labels of cluster identity 256+i: 1,000 apps of 10
// identities, 100 teams of 100, 10 namespaces of 1,000.
func scaleIdentity(i int) *tables.Identity {
	return &tables.Identity{
		ID: tables.NumericIdentity(256 + i),
		Labels: labels.FromMap(map[string]string{
			"app":                         fmt.Sprintf("app-%d", i/10),
			"team":                        fmt.Sprintf("team-%d", i%100),
			"io.kubernetes.pod.namespace": fmt.Sprintf("ns-%d", i%10),
		}, "k8s"),
	}
}

// scaleRulesDoc is 1,000 rules in Cilium's format. Rule j selects team
// j%100 (100 identities; every identity is selected by 10 rules) and
//   - allows ingress from app j (10 identities) on TCP 8000+j;
//   - every 10th: ingress from two other apps on TCP 9000-9099 (endPort);
//   - every 4th: ingress from its whole namespace (1,000 identities), all ports;
//   - every 5th: egress to the pods of team j+1 on UDP 53 and TCP 5432;
//   - every 20th: egress to a /32 CIDR on TCP 443 (a CIDR identity);
//   - every 50th: an ingress deny from app j+5 on TCP 22;
//   - every 100th: ingress from the host entity.
func scaleRulesDoc() []byte {
	sel := func(k, v string) map[string]any { return map[string]any{"matchLabels": map[string]string{k: v}} }
	port := func(p, proto string) map[string]any { return map[string]any{"port": p, "protocol": proto} }
	var rules []map[string]any
	for j := range scaleRules {
		r := map[string]any{"endpointSelector": sel("team", fmt.Sprintf("team-%d", j%100))}
		ingress := []any{map[string]any{
			"fromEndpoints": []any{sel("app", fmt.Sprintf("app-%d", j))},
			"toPorts":       []any{map[string]any{"ports": []any{port(fmt.Sprint(8000+j), "TCP")}}},
		}}
		if j%10 == 0 {
			ingress = append(ingress, map[string]any{
				"fromEndpoints": []any{map[string]any{"matchExpressions": []any{map[string]any{
					"key": "app", "operator": "In",
					"values": []string{fmt.Sprintf("app-%d", (j+1)%1000), fmt.Sprintf("app-%d", (j+2)%1000)},
				}}}},
				"toPorts": []any{map[string]any{"ports": []any{map[string]any{"port": "9000", "endPort": 9099, "protocol": "TCP"}}}},
			})
		}
		if j%4 == 0 {
			ingress = append(ingress, map[string]any{
				"fromEndpoints": []any{sel("io.kubernetes.pod.namespace", fmt.Sprintf("ns-%d", j%10))},
			})
		}
		if j%100 == 0 {
			ingress = append(ingress, map[string]any{"fromEntities": []string{"host"}})
		}
		r["ingress"] = ingress
		var egress []any
		if j%5 == 0 {
			egress = append(egress, map[string]any{
				"toEndpoints": []any{sel("team", fmt.Sprintf("team-%d", (j+1)%100))},
				"toPorts":     []any{map[string]any{"ports": []any{port("53", "UDP"), port("5432", "TCP")}}},
			})
		}
		if j%20 == 0 {
			egress = append(egress, map[string]any{
				"toCIDR":  []string{fmt.Sprintf("198.51.100.%d/32", j/20)},
				"toPorts": []any{map[string]any{"ports": []any{port("443", "TCP")}}},
			})
		}
		if egress != nil {
			r["egress"] = egress
		}
		if j%50 == 0 {
			r["ingressDeny"] = []any{map[string]any{
				"fromEndpoints": []any{sel("app", fmt.Sprintf("app-%d", (j+5)%1000))},
				"toPorts":       []any{map[string]any{"ports": []any{port("22", "TCP")}}},
			}}
		}
		rules = append(rules, r)
	}
	raw, _ := json.Marshal(rules)
	return raw
}

// policyMapKeys is the number of policy map keys the loader writes for a
// row (entries expanded to prefix keys, duplicates merged).
func policyMapKeys(p *tables.EndpointPolicy) int {
	keys := map[maps.PolicyKey]struct{}{}
	for _, e := range p.Entries {
		for _, k := range maps.PolicyKeys(p.EndpointID, e.Key.Direction, e.Key.Identity, e.Key.Protocol, e.Key.Port, e.Key.EndPort) {
			keys[k] = struct{}{}
		}
	}
	return len(keys)
}

// waitPolicyRow waits (bounded) for the endpoint-policy row of an
// endpoint with the given identity.
func waitPolicyRow(b *testing.B, d *db, epID uint16, id tables.NumericIdentity) *tables.EndpointPolicy {
	b.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		row, _, watch, found := d.Policy.GetWatch(d.DB.ReadTxn(), tables.EndpointPolicyIndex.Query(epID))
		if found && row.Identity == id {
			return row
		}
		select {
		case <-watch:
		case <-timeout:
			b.Fatalf("endpoint %d (identity %d) got no endpoint-policy row within 2 minutes", epID, id)
		}
	}
}

// BenchmarkPolicyScale measures the policy engine at scale, in process.
//
// Regeneration: the policy cell alone on the shared tables (no API, no
// datapath), 10,000 cluster identities and 1,000 rules (scaleRulesDoc,
// parsed by the real parser) written to the tables; then endpoints are
// added one at a time, each with an identity no endpoint had, and the time
// from the endpoint row's commit to its endpoint-policy row is one
// endpoint's regeneration (policy computation and the row). The first
// endpoint also pays for ingesting the identities and rules and is
// reported apart. Policy map size: the keys the loader would write for
// those rows.
//
// Enforcement: the default agent cells in process with their API socket
// and bpffs maps, 200 endpoints created through PUT /v1/endpoint without
// veths (no netns: the policy map is written the same way, only no program
// is attached), then the time from PUT /v1/policy to every endpoint's
// endpoint-policy row being reconciled into the BPF policy map, and to
// every endpoint reporting the new revision.
func BenchmarkPolicyScale(b *testing.B) {
	testutil.RequirePrivileged(b)
	b.ReportMetric(0, "ns/op")
	var sb strings.Builder
	regenerationAtScale(b, &sb)
	enforcementOn200(b, &sb)
	printResults(b, sb.String())
}

func regenerationAtScale(b *testing.B, sb *strings.Builder) {
	var d db
	h := infrastructure.New(policy.Cell, captureDB(&d)) // the engine alone: no socket
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = b.TempDir() })
	startHive(b, h)

	parsed, err := policyapi.Parse(scaleRulesDoc())
	if err != nil {
		b.Fatalf("parsing the generated rules: %v", err)
	}
	wtxn := d.DB.WriteTxn(d.Identities, d.Rules)
	for id, name := range tables.ReservedIdentities {
		d.Identities.Insert(wtxn, &tables.Identity{ID: id, Labels: labels.New(labels.Label{Source: "reserved", Key: name}), Reserved: true})
	}
	for i := range scaleIdentities {
		d.Identities.Insert(wtxn, scaleIdentity(i))
	}
	for j, pr := range parsed {
		d.Rules.Insert(wtxn, &tables.PolicyRule{Key: fmt.Sprintf("1/%d", j), Rule: pr.Rule, Revision: 1, Labels: pr.Labels})
	}
	start := time.Now()
	wtxn.Commit()

	var regen, keys, entries []float64
	var first time.Duration
	var largest struct {
		keys int
		took time.Duration
	}
	for k := range scaleSamples + 1 {
		i := (k*503 + 7) % scaleIdentities // spread over apps, teams, namespaces
		id := tables.NumericIdentity(256 + i)
		ep := &tables.Endpoint{
			ID:              uint16(100 + k),
			ContainerID:     fmt.Sprintf("bench-%d", k),
			ContainerIfName: "eth0",
			IPv4:            netip.AddrFrom4([4]byte{10, 99, byte(k / 250), byte(k%250 + 2)}),
			K8sNamespace:    fmt.Sprintf("ns-%d", i%10),
			K8sPodName:      fmt.Sprintf("pod-%d", k),
			PodLabels:       scaleIdentity(i).Labels,
			LabelsResolved:  true,
			Identity:        id,
			State:           tables.StateWaitingToRegenerate,
			Created:         time.Now(),
		}
		wtxn := d.DB.WriteTxn(d.Endpoints)
		d.Endpoints.Insert(wtxn, ep)
		if k > 0 {
			start = time.Now()
		}
		wtxn.Commit()
		row := waitPolicyRow(b, &d, ep.ID, id)
		took := time.Since(start)
		if k == 0 {
			first = took
			continue
		}
		nkeys := policyMapKeys(row)
		if nkeys > largest.keys {
			largest.keys, largest.took = nkeys, took
		}
		regen = append(regen, ms(took))
		keys = append(keys, float64(nkeys))
		entries = append(entries, float64(len(row.Entries)))
	}

	fmt.Fprintf(sb, "policy engine in process, %d identities, %d rules (%d ingress-deny, %d CIDR), endpoints with distinct identities\n",
		scaleIdentities, len(parsed), scaleRules/50, scaleRules/20)
	fmt.Fprintf(sb, "  first endpoint (ingests the identities and rules too): %.1f ms\n", ms(first))
	fmt.Fprintf(sb, "  one endpoint's regeneration (row committed -> endpoint-policy row), %d endpoints: p50 %.2f ms, max %.2f ms\n",
		len(regen), percentile(regen, 50), percentile(regen, 100))
	fmt.Fprintf(sb, "  policy map keys per endpoint: min %.0f, median %.0f, max %.0f (from %.0f-%.0f computed entries; map holds %d for all endpoints)\n",
		percentile(keys, 0), median(keys), percentile(keys, 100), percentile(entries, 0), percentile(entries, 100), 1024*1024)
	fmt.Fprintf(sb, "  the endpoint with the most keys (%d) regenerated in %.2f ms\n", largest.keys, ms(largest.took))
	b.ReportMetric(ms(first), "first-regen-ms")
	b.ReportMetric(percentile(regen, 50), "regen-p50-ms")
	b.ReportMetric(percentile(regen, 100), "regen-max-ms")
	b.ReportMetric(median(keys), "policy-keys/endpoint")
	b.ReportMetric(percentile(keys, 100), "max-policy-keys/endpoint")
}

func enforcementOn200(b *testing.B, sb *strings.Builder) {
	const endpoints, apps, puts = 200, 20, 5
	var d db
	socket := filepath.Join(b.TempDir(), "membrane.sock")
	bpfRoot := testutil.BPFDir(b)
	cidr := freePodCIDR(b)
	h := cells.NewAgentHive(cells.DefaultCells, captureDB(&d))
	hive.AddConfigOverride(h, func(c *apiserver.Config) { c.Socket = socket })
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = b.TempDir() })
	hive.AddConfigOverride(h, func(c *loader.Config) { c.BPFRoot = bpfRoot })
	hive.AddConfigOverride(h, func(c *ipam.Config) { c.PodCIDR = cidr.String() })
	startHive(b, h)
	c := client.New(socket)

	addr := cidr.Addr().Next()
	for i := range endpoints {
		addr = addr.Next()
		name := fmt.Sprintf("pod-%d", i)
		if _, err := c.PutPod(ctxFor(b, 30*time.Second), &models.Pod{Namespace: "default", Name: name,
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%apps)}}); err != nil {
			b.Fatalf("PUT /v1/pod: %v", err)
		}
		ep, err := c.PutEndpoint(ctxFor(b, 30*time.Second), "0", &models.EndpointChangeRequest{
			ContainerID: fmt.Sprintf("bench-%d", i), ContainerInterfaceName: "eth0",
			Addressing: &models.AddressPair{IPv4: addr.String()}, K8sNamespace: "default", K8sPodName: name,
			SyncBuildEndpoint: true,
		})
		if err != nil {
			b.Fatalf("PUT /v1/endpoint (%d of %d): %v", i+1, endpoints, err)
		}
		if ep.State != models.StateReady {
			b.Fatalf("endpoint %d is %s after a sync build", ep.ID, ep.State)
		}
	}

	// One CiliumNetworkPolicy selecting every endpoint: ingress from the
	// next app on one TCP port. Each PUT replaces the object (the port
	// changes), so every PUT changes all 200 endpoints' policy.
	var toRows, toEndpoints []float64
	for n := range puts {
		doc := map[string]any{
			"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
			"metadata": map[string]any{"name": "bench", "namespace": "default"},
			"specs":    []any{},
		}
		var specs []any
		for k := range apps {
			specs = append(specs, map[string]any{
				"endpointSelector": map[string]any{"matchLabels": map[string]string{"app": fmt.Sprintf("app-%d", k)}},
				"ingress": []any{map[string]any{
					"fromEndpoints": []any{map[string]any{"matchLabels": map[string]string{"app": fmt.Sprintf("app-%d", (k+1)%apps)}}},
					"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": fmt.Sprint(8000 + n), "protocol": "TCP"}}}},
				}},
			})
		}
		doc["specs"] = specs
		var ans struct {
			Revision uint64 `json:"revision"`
		}
		start := time.Now()
		if err := c.Do(ctxFor(b, 30*time.Second), "PUT", "/v1/policy", doc, &ans); err != nil {
			b.Fatalf("PUT /v1/policy: %v", err)
		}
		rowsAt, epsAt := waitEnforced(b, &d, endpoints, ans.Revision, start)
		toRows = append(toRows, ms(rowsAt))
		toEndpoints = append(toEndpoints, ms(epsAt))
	}
	fmt.Fprintf(sb, "PUT /v1/policy -> enforced on %d endpoints (in-process default cells, endpoints made through the API without veths;\n", endpoints)
	fmt.Fprintf(sb, "  a CiliumNetworkPolicy of %d rules, one per app, each PUT changes the port: every endpoint's policy changes), %d PUTs:\n", apps, puts)
	fmt.Fprintf(sb, "  to all endpoint-policy rows reconciled into the BPF map: median %.1f ms, max %.1f ms\n", median(toRows), percentile(toRows, 100))
	fmt.Fprintf(sb, "  to all endpoints reporting the revision (ready):        median %.1f ms, max %.1f ms", median(toEndpoints), percentile(toEndpoints, 100))
	b.ReportMetric(median(toRows), "put-to-map-200ep-ms")
	b.ReportMetric(median(toEndpoints), "put-to-ready-200ep-ms")
}

// waitEnforced waits (bounded) until all n endpoint-policy rows reflect
// revision rev and are reconciled, and until all n endpoints report it;
// it returns both times since start.
func waitEnforced(b *testing.B, d *db, n int, rev uint64, start time.Time) (rows, eps time.Duration) {
	b.Helper()
	timeout := time.After(2 * time.Minute)
	for rows == 0 || eps == 0 {
		txn := d.DB.ReadTxn()
		pit, pWatch := d.Policy.AllWatch(txn)
		eit, eWatch := d.Endpoints.AllWatch(txn)
		if rows == 0 {
			done := 0
			for row := range pit {
				if row.Revision >= rev && row.Status.Kind == reconciler.StatusKindDone {
					done++
				}
			}
			if done >= n {
				rows = time.Since(start)
			}
		}
		if eps == 0 {
			done := 0
			for ep := range eit {
				if ep.PolicyRevision >= rev && ep.State == tables.StateReady {
					done++
				}
			}
			if done >= n {
				eps = time.Since(start)
			}
		}
		if rows != 0 && eps != 0 {
			break
		}
		select {
		case <-pWatch:
		case <-eWatch:
		case <-timeout:
			txn := d.DB.ReadTxn()
			seen := map[string]int{}
			for ep := range d.Endpoints.All(txn) {
				seen[fmt.Sprintf("endpoint %s rev %d", ep.State, ep.PolicyRevision)]++
			}
			for row := range d.Policy.All(txn) {
				seen[fmt.Sprintf("row rev %d %s", row.Revision, row.Status.Kind)]++
			}
			b.Fatalf("policy revision %d not enforced on %d endpoints within 2 minutes (rows done: %v, endpoints done: %v): %v",
				rev, n, rows != 0, eps != 0, seen)
		}
	}
	return rows, eps
}
