package identity

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/internal/kubetest"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// startCluster starts an API server with the CRDs and membrane-system.
func startCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t)
	c.Kubectl(t, "apply", "-f", "../../install/kubernetes/crds/")
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumidentities.cilium.io", "crd/ciliumendpoints.cilium.io")
	c.Kubectl(t, "create", "namespace", ClaimNamespace)
	return c
}

// newAgentBackend is one agent's backend: its own clientset, its own caches.
func newAgentBackend(t *testing.T, c *kubetest.Cluster, node string) *ClusterAllocator {
	t.Helper()
	cs, err := client.New(c.Kubeconfig(), node)
	if err != nil {
		t.Fatal(err)
	}
	a := NewClusterAllocator(cs, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a.Start(ctx)
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if !a.WaitSynced(wctx) {
		t.Fatal("caches not synced within a minute")
	}
	return a
}

func allocCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterAllocator(t *testing.T) {
	c := startCluster(t)
	a := newAgentBackend(t, c, "node-a")
	b := newAgentBackend(t, c, "node-b")
	ctx := allocCtx(t)
	web := lbls(t, "k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod")

	first, isNew, err := a.Allocate(ctx, web)
	if err != nil || !isNew || first.Source != SourceCluster {
		t.Fatalf("first allocation: %+v new=%v err=%v", first, isNew, err)
	}
	if first.ID < tables.MinClusterIdentity || first.ID > tables.MaxClusterIdentity {
		t.Fatalf("identity %d outside the cluster range", first.ID)
	}
	// The other agent gets the same number, without creating anything.
	second, isNew, err := b.Allocate(ctx, web)
	if err != nil || isNew || second.ID != first.ID {
		t.Fatalf("second agent: %+v new=%v err=%v, want %d", second, isNew, err, first.ID)
	}

	// The object is as Cilium writes it.
	ci, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, fmt.Sprint(first.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ci.SecurityLabels["k8s:app"] != "web" || ci.SecurityLabels["k8s:io.kubernetes.pod.namespace"] != "prod" ||
		ci.Labels["io.kubernetes.pod.namespace"] != "prod" || ci.Labels["app"] != "web" {
		t.Errorf("CiliumIdentity %+v", ci)
	}
	// The Namespace printer column reads the metadata label.
	out := c.Kubectl(t, "get", "ciliumidentities", fmt.Sprint(first.ID))
	if !containsAll(out, "NAMESPACE", "prod") {
		t.Errorf("kubectl get ciliumidentities:\n%s", out)
	}
	// The claim holds the number and the labels.
	lease, err := a.cs.CoordinationV1().Leases(ClaimNamespace).Get(ctx, ClaimName(web.String()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cl, ok := claimOf(lease); !ok || cl.id != first.ID || cl.labels != web.String() {
		t.Errorf("claim %+v", lease.Annotations)
	}

	// Known labels are answered from the cache: once it holds them, they
	// resolve with the API server stopped; new labels fail, in bounded
	// time, naming the cause, and succeed once it is back.
	waitFor(t, "the cache to hold the identity", func() bool { _, ok := b.cached(web.String()); return ok })
	c.StopAPIServer()
	if got, _, err := b.Allocate(ctx, web); err != nil || got.ID != first.ID {
		t.Fatalf("known labels with the API server down: %+v %v", got, err)
	}
	db := lbls(t, "k8s:app=db")
	shortCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, _, err = b.Allocate(shortCtx, db)
	cancel()
	if err == nil || !containsAll(err.Error(), `allocate identity for labels "k8s:app=db"`, "cluster identities unavailable") {
		t.Fatalf("new labels with the API server down: %v", err)
	}
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	var dbID tables.NumericIdentity
	waitFor(t, "allocation to succeed with the API server back", func() bool {
		ident, _, err := b.Allocate(ctx, db)
		if err == nil {
			dbID = ident.ID
		}
		return err == nil
	})
	if dbID == first.ID {
		t.Fatalf("different labels share identity %d", dbID)
	}

	// Restore: labels without an identity get the wanted number if free.
	cart := lbls(t, "k8s:app=cart")
	want := tables.NumericIdentity(4242)
	if got, _, err := a.Restore(ctx, cart, want); err != nil || got.ID != want {
		t.Fatalf("restore: %+v %v, want %d", got, err, want)
	}
	// A taken number is not given to other labels.
	other := lbls(t, "k8s:app=other")
	waitFor(t, "the cache to hold 4242", func() bool { _, ok := a.Get(want); return ok })
	if got, _, err := a.Restore(ctx, other, want); err != nil || got.ID == want {
		t.Fatalf("restore onto a taken number: %+v %v", got, err)
	}
}

// A claim whose number was taken by other labels (a stale cache) moves to
// a free number; the labels get exactly one identity.
func TestClusterAllocatorNumberTaken(t *testing.T) {
	c := startCluster(t)
	a := newAgentBackend(t, c, "node-a")
	ctx := allocCtx(t)
	// Another agent holds 300 for app=x, but no cache knows yet: the
	// claim of app=y is created pointing at 300.
	x, y := lbls(t, "k8s:app=x"), lbls(t, "k8s:app=y")
	if _, err := a.cs.CiliumV2.CiliumIdentities().Create(ctx, newCI(300, x), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cs.CoordinationV1().Leases(ClaimNamespace).Create(ctx, newClaim(ClaimName(y.String()), y.String(), 300, "node-z"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _, err := a.Allocate(ctx, y)
	if err != nil || got.ID == 300 {
		t.Fatalf("allocate: %+v %v", got, err)
	}
	assertOneEach(t, a, map[string]bool{x.String(): true, y.String(): true})
}

// N agents allocate the same 50 new label sets at once: exactly 50
// CiliumIdentities result, and every agent has the same number for each.
func TestClusterAllocatorConcurrent(t *testing.T) {
	c := startCluster(t)
	const agents, sets = 4, 50
	backends := make([]*ClusterAllocator, agents)
	for i := range backends {
		backends[i] = newAgentBackend(t, c, fmt.Sprintf("node-%d", i))
	}
	ctx := allocCtx(t)
	all := make([]labels.Labels, sets)
	want := map[string]bool{}
	for i := range all {
		all[i] = lbls(t, fmt.Sprintf("k8s:app=app-%d", i), "k8s:io.kubernetes.pod.namespace=default")
		want[all[i].String()] = true
	}
	got := make([][]tables.NumericIdentity, agents)
	errs := make(chan error, agents*sets)
	var wg sync.WaitGroup
	for i, b := range backends {
		got[i] = make([]tables.NumericIdentity, sets)
		wg.Go(func() {
			// Pairs of agents in the same order (they race on every
			// set), the pairs in different orders, all at once.
			for k := range sets {
				j := (k + (i/2)*sets/2) % sets
				ident, _, err := b.Allocate(ctx, all[j])
				if err != nil {
					errs <- err
					continue
				}
				got[i][j] = ident.ID
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for j := range sets {
		for i := 1; i < agents; i++ {
			if got[i][j] != got[0][j] {
				t.Errorf("labels %s: agent 0 has %d, agent %d has %d", all[j], got[0][j], i, got[i][j])
			}
		}
	}
	assertOneEach(t, backends[0], want)
}

// assertOneEach checks the API server holds exactly one CiliumIdentity per
// label set of want, and no other.
func assertOneEach(t *testing.T, a *ClusterAllocator, want map[string]bool) {
	t.Helper()
	list, err := a.cs.CiliumV2.CiliumIdentities().List(allocCtx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, ci := range list.Items {
		ls, err := SecurityLabels(&ci)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[ls.String()]; dup {
			t.Errorf("labels %s have two identities: %s and %s", ls, prev, ci.Name)
		}
		seen[ls.String()] = ci.Name
		if !want[ls.String()] {
			t.Errorf("unexpected CiliumIdentity %s: %s", ci.Name, ls)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d CiliumIdentities, want %d", len(list.Items), len(want))
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !contains(s, sub) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func newCI(id uint32, ls labels.Labels) *v2.CiliumIdentity { return v2.NewCiliumIdentity(id, ls) }

// The collector deletes the claim, then the CiliumIdentity, each under
// the version it decided on: a claim touched meanwhile keeps both. An
// agent whose endpoint carries a deleted identity claims it back with the
// same number.
func TestCollectorDeleteAndReclaim(t *testing.T) {
	c := startCluster(t)
	a := newAgentBackend(t, c, "node-a")
	ctx := allocCtx(t)
	web := lbls(t, "k8s:app=web")
	ident, _, err := a.Allocate(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprint(ident.ID)
	g := &collector{log: slog.Default(), cs: a.cs, cluster: a, grace: time.Second}
	ci, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// An agent touches the claim after the collector's decision.
	leases := a.cs.CoordinationV1().Leases(ClaimNamespace)
	lease, err := leases.Get(ctx, ClaimName(web.String()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lease.Labels["touched"] = "yes"
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A delete under the claim's version from before the touch fails:
	// the precondition deleteIdentity relies on.
	err = leases.Delete(ctx, lease.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &lease.ResourceVersion}})
	if !k8serrors.IsConflict(err) {
		t.Fatalf("delete under the version before the touch: %v, want a conflict", err)
	}

	// Now the collector decides and deletes: claim and object go.
	if err := g.deleteIdentity(ctx, ci); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Get(ctx, lease.Name, metav1.GetOptions{}); err == nil {
		t.Error("claim still there")
	}
	if _, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Error("CiliumIdentity still there")
	}
	// The agent claims it back (its endpoint carries the number); the
	// collector's stale decision on the old object then deletes nothing,
	// neither the new object nor its claim.
	waitFor(t, "the cache to see the deletion", func() bool { _, ok := a.Get(ident.ID); return !ok })
	back, _, err := a.Restore(ctx, web, ident.ID)
	if err != nil || back.ID != ident.ID {
		t.Fatalf("reclaim: %+v %v, want %d", back, err, ident.ID)
	}
	if err := g.deleteIdentity(ctx, ci); err == nil {
		t.Error("deleteIdentity of the old object removed the reclaimed one")
	}
	if _, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("reclaimed CiliumIdentity: %v", err)
	}
	if _, err := leases.Get(ctx, lease.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("claim of the reclaimed identity: %v", err)
	}
	assertOneEach(t, a, map[string]bool{web.String(): true})
}

// A build without the remote endpoints cell: the collector's leader
// watches every CiliumEndpoint itself. An identity a CEP carries stays;
// one nothing uses goes after the grace.
func TestCollectorOwnCEPWatch(t *testing.T) {
	c := startCluster(t)
	a := newAgentBackend(t, c, "node-a")
	ctx := allocCtx(t)
	web, _, err := a.Allocate(ctx, lbls(t, "k8s:app=web"))
	if err != nil {
		t.Fatal(err)
	}
	unused, _, err := a.Allocate(ctx, lbls(t, "k8s:app=unused"))
	if err != nil {
		t.Fatal(err)
	}
	// As in Cilium's CRD, status is part of the object (no subresource).
	cep := &v2.CiliumEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1"},
		Status: v2.EndpointStatus{Identity: &v2.EndpointIdentity{ID: int64(web.ID)}}}
	if _, err := a.cs.CiliumV2.CiliumEndpoints("default").Create(ctx, cep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	g := &collector{log: slog.Default(), db: db, endpoints: eps, cs: a.cs, cluster: a, grace: time.Second, event: func(string) {}}
	lctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.lead(lctx) }()
	t.Cleanup(func() { stop(); <-done })

	name := func(id tables.NumericIdentity) string { return fmt.Sprint(id) }
	waitFor(t, "the unused identity collected", func() bool {
		_, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, name(unused.ID), metav1.GetOptions{})
		return k8serrors.IsNotFound(err)
	})
	if _, err := a.cs.CiliumV2.CiliumIdentities().Get(ctx, name(web.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("the identity a CiliumEndpoint carries: %v", err)
	}
}
