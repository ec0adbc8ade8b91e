package identity_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

func start(t *testing.T, a *testAgent, flags ...string) {
	t.Helper()
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	a.h.RegisterFlags(fs)
	if err := fs.Parse(flags); err != nil {
		t.Fatal(err)
	}
	log := hivetest.Logger(t)
	if err := a.h.Start(log, context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { a.h.Stop(log, context.Background()) })
}

func stop(t *testing.T, a *testAgent) {
	t.Helper()
	if err := a.h.Stop(hivetest.Logger(t), context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits until cond holds for the current database contents. It
// wakes up on every change of the two tables; the deadline only bounds a
// failing test.
func waitFor(t *testing.T, a *testAgent, what string, cond func(statedb.ReadTxn) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		txn := a.db.ReadTxn()
		if cond(txn) {
			return
		}
		_, epWatch := a.endpoints.AllWatch(txn)
		_, idWatch := a.identities.AllWatch(txn)
		select {
		case <-epWatch:
		case <-idWatch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func endpoint(id uint16, pod string, lbls ...string) *tables.Endpoint {
	ls, err := labels.ParseList(append(lbls, "k8s:io.kubernetes.pod.namespace=default"), labels.SourceK8s)
	if err != nil {
		panic(err)
	}
	return &tables.Endpoint{
		ID: id, ContainerID: pod, ContainerIfName: "eth0", K8sNamespace: "default", K8sPodName: pod,
		PodLabels: ls, LabelsResolved: true, State: tables.StateWaitingForIdentity,
	}
}

func (a *testAgent) insert(t *testing.T, eps ...*tables.Endpoint) {
	t.Helper()
	wtxn := a.db.WriteTxn(a.endpoints)
	for _, ep := range eps {
		if _, _, err := a.endpoints.Insert(wtxn, ep); err != nil {
			t.Fatal(err)
		}
	}
	wtxn.Commit()
}

func (a *testAgent) delete(t *testing.T, id uint16) {
	t.Helper()
	wtxn := a.db.WriteTxn(a.endpoints)
	ep, _, ok := a.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok {
		t.Fatalf("no endpoint %d", id)
	}
	a.endpoints.Delete(wtxn, ep)
	wtxn.Commit()
}

func (a *testAgent) endpointIdentity(txn statedb.ReadTxn, id uint16) (tables.NumericIdentity, tables.EndpointState) {
	ep, _, ok := a.endpoints.Get(txn, tables.EndpointIDIndex.Query(id))
	if !ok {
		return 0, ""
	}
	return ep.Identity, ep.State
}

func (a *testAgent) clusterIdentities(txn statedb.ReadTxn) []tables.NumericIdentity {
	var out []tables.NumericIdentity
	for ident := range a.identities.All(txn) {
		if !ident.Reserved {
			out = append(out, ident.ID)
		}
	}
	return out
}

// Stop the agent, start a new one on the same state directory: the
// numbers are there before any endpoint is, restored endpoints keep them,
// and what no restored endpoint claims goes once restoring is done.
func TestRestartKeepsIdentities(t *testing.T) {
	dir := t.TempDir()

	first := newTestAgent(t, dir)
	start(t, first)
	first.markRestored()
	first.insert(t, endpoint(1, "web-1", "k8s:app=web"), endpoint(2, "db-1", "k8s:app=db"))
	waitFor(t, first, "identities 256 and 257", func(txn statedb.ReadTxn) bool {
		web, _ := first.endpointIdentity(txn, 1)
		db, _ := first.endpointIdentity(txn, 2)
		return web == 256 && db == 257
	})
	stop(t, first)

	second := newTestAgent(t, dir)
	start(t, second)
	// Right after start, before the endpoint manager restored anything.
	if got := second.clusterIdentities(second.db.ReadTxn()); !slices.Equal(got, []tables.NumericIdentity{256, 257}) {
		t.Fatalf("identities after restart = %v, want [256 257]", got)
	}
	if ok, _ := second.identities.Initialized(second.db.ReadTxn()); !ok {
		t.Error("identities table not initialized after start")
	}
	web := endpoint(1, "web-1", "k8s:app=web")
	web.State, web.Identity = tables.StateRestoring, 256
	second.insert(t, web)
	waitFor(t, second, "web-1 restored with 256", func(txn statedb.ReadTxn) bool {
		id, st := second.endpointIdentity(txn, 1)
		return id == 256 && st == tables.StateWaitingToRegenerate
	})
	second.markRestored()
	waitFor(t, second, "257 released", func(txn statedb.ReadTxn) bool {
		return slices.Equal(second.clusterIdentities(txn), []tables.NumericIdentity{256})
	})
}

// When every number is taken, the endpoint waits in waiting-for-identity
// with the reason in its log and the cell's health degraded; a released
// number resolves it without further ado.
func TestExhaustionWaitsForRelease(t *testing.T) {
	a := newTestAgent(t, t.TempDir(), identity.WithRange(256, 257))
	start(t, a)
	a.markRestored()
	a.insert(t, endpoint(1, "a", "k8s:app=a"), endpoint(2, "b", "k8s:app=b"))
	a.insert(t, endpoint(3, "c", "k8s:app=c"))

	waitFor(t, a, "endpoint 3's log to say why it waits", func(txn statedb.ReadTxn) bool {
		ep, _, _ := a.endpoints.Get(txn, tables.EndpointIDIndex.Query(3))
		n := len(ep.Log)
		return n > 0 && ep.Log[n-1].Code == "failure" && strings.Contains(ep.Log[n-1].Message, "identity range exhausted")
	})
	txn := a.db.ReadTxn()
	if id, st := a.endpointIdentity(txn, 3); id != 0 || st != tables.StateWaitingForIdentity {
		t.Fatalf("endpoint 3: identity %d state %s, want 0 waiting-for-identity", id, st)
	}
	ep, _, _ := a.endpoints.Get(txn, tables.EndpointIDIndex.Query(3))
	if n := len(ep.Log); n != 1 {
		t.Errorf("endpoint 3 has %d log entries, want the failure once: %+v", n, ep.Log)
	}

	a.delete(t, 1)
	waitFor(t, a, "endpoint 3 to get the released 256", func(txn statedb.ReadTxn) bool {
		id, st := a.endpointIdentity(txn, 3)
		return id == 256 && st == tables.StateWaitingToRegenerate
	})
}

// --identity-label-filter adds to the default filter; the cell provides the
// filter to other cells.
func TestLabelFilterFlag(t *testing.T) {
	var f *labels.Filter
	a := newTestAgent(t, t.TempDir(), cell.Invoke(func(lf *labels.Filter) { f = lf }))
	start(t, a, "--identity-label-filter=k8s:!version$,k8s:!build")
	a.markRestored()
	if got := f.Patterns(); !slices.Contains(got, "k8s:!version$") || !slices.Contains(got, "k8s:!build") || !slices.Contains(got, `!pod-template-hash$`) {
		t.Fatalf("filter patterns = %v: want the defaults plus the flag's", got)
	}
	a.insert(t,
		endpoint(1, "web-v1", "k8s:app=web", "k8s:version=v1", "k8s:build-id=1"),
		endpoint(2, "web-v2", "k8s:app=web", "k8s:version=v2", "k8s:build-id=2"))
	waitFor(t, a, "both endpoints resolved", func(txn statedb.ReadTxn) bool {
		one, _ := a.endpointIdentity(txn, 1)
		two, _ := a.endpointIdentity(txn, 2)
		return one != 0 && two != 0
	})
	txn := a.db.ReadTxn()
	one, _ := a.endpointIdentity(txn, 1)
	two, _ := a.endpointIdentity(txn, 2)
	if one != two {
		t.Errorf("endpoints differing only in filtered labels got %d and %d", one, two)
	}
	ident, _, _ := a.identities.Get(txn, tables.IdentityIDIndex.Query(one))
	if want := "k8s:app=web;k8s:io.kubernetes.pod.namespace=default"; ident.Labels.String() != want {
		t.Errorf("identity labels = %q, want %q", ident.Labels, want)
	}
}

func TestInvalidFilterFailsStart(t *testing.T) {
	a := newTestAgent(t, t.TempDir())
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	a.h.RegisterFlags(fs)
	if err := fs.Parse([]string{"--identity-label-filter=k8s:(oops"}); err != nil {
		t.Fatal(err)
	}
	err := a.h.Start(hivetest.Logger(t), context.Background())
	if err == nil {
		a.h.Stop(hivetest.Logger(t), context.Background())
		t.Fatal("agent started with an invalid filter pattern")
	}
	if !strings.Contains(err.Error(), "--identity-label-filter") || !strings.Contains(err.Error(), "k8s:(oops") {
		t.Errorf("error %q does not name the flag and the pattern", err)
	}
}

func TestAPI(t *testing.T) {
	a := newTestAgent(t, t.TempDir())
	start(t, a)
	a.markRestored()
	a.insert(t, endpoint(1, "web-1", "k8s:app=web"), endpoint(2, "web-2", "k8s:app=web"), endpoint(3, "db-1", "k8s:app=db"))
	waitFor(t, a, "endpoints resolved", func(txn statedb.ReadTxn) bool {
		id, _ := a.endpointIdentity(txn, 3)
		return id == 257
	})

	code, body := a.get("/v1/identity")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/identity: %d %s", code, body)
	}
	var list []models.Identity
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	var ids []uint32
	for _, m := range list {
		ids = append(ids, m.ID)
	}
	if want := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 256, 257}; !slices.Equal(ids, want) {
		t.Fatalf("identities = %v, want %v (sorted)", ids, want)
	}
	if list[10].Endpoints != 2 || list[11].Endpoints != 1 || list[0].Endpoints != 0 {
		t.Errorf("endpoint counts: 256=%d 257=%d host=%d, want 2 1 0", list[10].Endpoints, list[11].Endpoints, list[0].Endpoints)
	}
	if !slices.Equal(list[0].Labels, []string{"reserved:host"}) {
		t.Errorf("identity 1 labels = %v", list[0].Labels)
	}

	code, body = a.get("/v1/identity/257")
	var one models.Identity
	if code != http.StatusOK || json.Unmarshal([]byte(body), &one) != nil || one.ID != 257 ||
		!slices.Equal(one.Labels, []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=default"}) {
		t.Errorf("GET /v1/identity/257 = %d %s", code, body)
	}

	for path, want := range map[string]int{
		"/v1/identity/258":        http.StatusNotFound,
		"/v1/identity/abc":        http.StatusBadRequest,
		"/v1/identity/-1":         http.StatusBadRequest,
		"/v1/identity/4294967296": http.StatusBadRequest,
	} {
		code, body := a.get(path)
		var e models.Error
		if code != want || json.Unmarshal([]byte(body), &e) != nil || e.Code != want || e.Message == "" {
			t.Errorf("GET %s = %d %s, want %d with a message", path, code, body, want)
		}
	}
}

// An endpoint none of whose labels is security-relevant still gets an
// identity: the one of the empty label set, shared by all such endpoints.
func TestNoSecurityLabels(t *testing.T) {
	a := newTestAgent(t, t.TempDir())
	start(t, a)
	a.markRestored()
	bare := &tables.Endpoint{ID: 1, ContainerID: "c1", ContainerIfName: "eth0", LabelsResolved: true, State: tables.StateWaitingForIdentity,
		RequestLabels: labels.Labels{{Source: labels.SourceK8s, Key: "pod-template-hash", Value: "abc"}}}
	bare2 := &tables.Endpoint{ID: 2, ContainerID: "c2", ContainerIfName: "eth0", LabelsResolved: true, State: tables.StateWaitingForIdentity}
	a.insert(t, bare, bare2)
	waitFor(t, a, "both resolved", func(txn statedb.ReadTxn) bool {
		one, s1 := a.endpointIdentity(txn, 1)
		two, s2 := a.endpointIdentity(txn, 2)
		return one != 0 && one == two && s1 == tables.StateWaitingToRegenerate && s2 == tables.StateWaitingToRegenerate
	})
	txn := a.db.ReadTxn()
	id, _ := a.endpointIdentity(txn, 1)
	if ident, _, ok := a.identities.Get(txn, tables.IdentityIDIndex.Query(id)); !ok || len(ident.Labels) != 0 {
		t.Errorf("identity %d = %+v %v, want a row with no labels", id, ident, ok)
	}
}
