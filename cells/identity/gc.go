package identity

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	coordinationv1 "k8s.io/api/coordination/v1"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// GCLease is the Lease (in ClaimNamespace) the garbage collectors of the
// agents elect their leader with: one collects at a time.
const GCLease = "membrane-identity-gc"

// Leader election timing (client-go's usual values).
const (
	gcLeaseDuration = 15 * time.Second
	gcRenewDeadline = 10 * time.Second
	gcRetryPeriod   = 2 * time.Second
)

// collector deletes the CiliumIdentities no endpoint of the cluster uses,
// once they have been unused for grace, and the claims nothing holds. In
// use: some CiliumEndpoint's status.identity.id, or an endpoint of this
// agent. See docs/identities.md for its races with allocation.
type collector struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.Table[*tables.Endpoint]
	cs        *client.Clientset
	cluster   *ClusterAllocator
	grace     time.Duration
	// remote: the other nodes' CEPs, from the remote endpoints cell's
	// cache; nil (a build without that cell): ceps, a cache of every CEP
	// of the cluster, a new one per leadership term.
	remote k8scell.EndpointIdentities
	ceps   cache.SharedIndexInformer
	event  func(resource string) // counts a watch event (k8s-status)

	// unusedSince: when the leader first saw an identity (by number) or a
	// claim (by name) unused; a new leader starts afresh.
	unusedSince      map[tables.NumericIdentity]time.Time
	claimUnusedSince map[string]time.Time
}

func newCollector(p controllerParams, cl *ClusterAllocator, grace time.Duration) *collector {
	g := &collector{log: p.Log, db: p.DB, endpoints: p.Endpoints, cs: p.Clientset, cluster: cl, grace: grace,
		remote: p.RemoteEndpoints, event: func(string) {}}
	if p.K8sStatus != nil {
		g.event = p.K8sStatus.Event
	}
	return g
}

// cepsResource names the leader's cache of every CiliumEndpoint in the
// k8s-status table (the row the CiliumEndpoint writer reports to).
const cepsResource = "ciliumendpoints"

// cepInformer caches every CiliumEndpoint; a new one per leadership term
// (an informer does not start twice).
func (g *collector) cepInformer() cache.SharedIndexInformer {
	ceps := g.cs.CiliumV2.CiliumEndpoints("")
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ceps.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ceps.Watch(ctx, o)
		},
	}, &v2.CiliumEndpoint{}, 0, cache.Indexers{})
	count := func(any) { g.event(cepsResource) }
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    count,
		UpdateFunc: func(_, obj any) { count(obj) },
		DeleteFunc: count,
	})
	return inf
}

// run takes part in the election until the agent stops; while leading it
// collects every interval.
func (g *collector) run(ctx context.Context, health cell.Health) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta: metav1.ObjectMeta{Name: GCLease, Namespace: ClaimNamespace},
		Client:    g.cs.CoordinationV1(),
		// Unique per agent process, readable as the node.
		LockConfig: resourcelock.ResourceLockConfig{Identity: g.cs.NodeName + "_" + rand.String(6)},
	}
	health.OK("waiting to lead (Lease " + ClaimNamespace + "/" + GCLease + ")")
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            GCLease,
			LeaseDuration:   gcLeaseDuration,
			RenewDeadline:   gcRenewDeadline,
			RetryPeriod:     gcRetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					g.log.Info("Leading the identity garbage collection", "lease", ClaimNamespace+"/"+GCLease, "grace", g.grace)
					health.OK("leading: collecting unused identities")
					g.lead(ctx)
				},
				OnStoppedLeading: func() { health.OK("not leading") },
			},
		})
		if err != nil {
			return fmt.Errorf("identity garbage collector: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}

// interval between two collections: a fraction of the grace, so an
// identity goes at most a quarter of it late.
func (g *collector) interval() time.Duration {
	return min(max(g.grace/4, time.Second), 30*time.Second)
}

// lead collects until leadership ends.
func (g *collector) lead(ctx context.Context) {
	g.unusedSince = map[tables.NumericIdentity]time.Time{}
	g.claimUnusedSince = map[string]time.Time{}
	var cepsSynced cache.InformerSynced
	if g.remote != nil {
		cepsSynced = g.remote.HasSynced
	} else {
		g.ceps = g.cepInformer()
		go g.ceps.RunWithContext(ctx)
		cepsSynced = g.ceps.HasSynced
	}
	if !g.cluster.WaitSynced(ctx) || !cache.WaitForCacheSync(ctx.Done(), cepsSynced) {
		return
	}
	tick := time.NewTicker(g.interval())
	defer tick.Stop()
	for {
		g.collect(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// inUse returns the identities some CiliumEndpoint or local endpoint has.
// This node's own CEPs describe its local endpoints (or are stale, and
// being pruned), so the other nodes' CEPs and the local endpoints cover
// every identity in use.
func (g *collector) inUse() map[tables.NumericIdentity]bool {
	used := map[tables.NumericIdentity]bool{}
	if g.remote != nil {
		g.remote.AddIdentities(used)
	} else {
		for _, obj := range g.ceps.GetIndexer().List() {
			if cep, ok := obj.(*v2.CiliumEndpoint); ok && cep.Status.Identity != nil {
				used[tables.NumericIdentity(cep.Status.Identity.ID)] = true
			}
		}
	}
	for ep := range g.endpoints.All(g.db.ReadTxn()) {
		used[ep.Identity] = true
		used[ep.DatapathIdentity] = true
	}
	return used
}

// collect deletes what has been unused for the grace period.
func (g *collector) collect(ctx context.Context) {
	now := time.Now()
	used := g.inUse()
	present := map[tables.NumericIdentity]bool{}
	for _, obj := range g.cluster.idents.GetIndexer().List() {
		ci := obj.(*v2.CiliumIdentity)
		n, err := strconv.ParseUint(ci.Name, 10, 32)
		if err != nil {
			continue // not an identity number: not ours to delete
		}
		id := tables.NumericIdentity(n)
		present[id] = true
		if used[id] {
			delete(g.unusedSince, id)
			continue
		}
		since, seen := g.unusedSince[id]
		if !seen {
			g.unusedSince[id] = now
			continue
		}
		if now.Sub(since) < g.grace {
			continue
		}
		if err := g.deleteIdentity(ctx, ci); err != nil {
			g.log.Warn("Unused identity not deleted; retrying", "identity", id, "error", err)
			continue
		}
		delete(g.unusedSince, id)
	}
	for id := range g.unusedSince {
		if !present[id] {
			delete(g.unusedSince, id)
		}
	}
	g.collectClaims(ctx, now)
}

// deleteIdentity deletes an unused CiliumIdentity: its claim first, then
// the object, each under a precondition on the version the decision was
// taken on. Claim first: once it is gone, every new allocation of the
// labels goes through a new claim, and an agent that read the old one
// finds it gone when it checks (ClusterAllocator.stillClaimed).
func (g *collector) deleteIdentity(ctx context.Context, ci *v2.CiliumIdentity) error {
	ctx, cancel := context.WithTimeout(ctx, allocTimeout)
	defer cancel()
	// The object decided on must still be there as it was: a claim found
	// now may belong to a newer object of the same number and labels (an
	// agent claimed it back), which is not ours to delete.
	cur, err := g.cs.CiliumV2.CiliumIdentities().Get(ctx, ci.Name, metav1.GetOptions{})
	if k8serrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.UID != ci.UID || cur.ResourceVersion != ci.ResourceVersion {
		return fmt.Errorf("CiliumIdentity %s changed meanwhile; checking again next round", ci.Name)
	}
	if ls, err := SecurityLabels(ci); err == nil {
		key := ls.String()
		leases := g.cs.CoordinationV1().Leases(ClaimNamespace)
		lease, err := leases.Get(ctx, ClaimName(key), metav1.GetOptions{})
		switch {
		case k8serrors.IsNotFound(err):
		case err != nil:
			return err
		default:
			if c, ok := claimOf(lease); ok && c.labels == key && strconv.FormatUint(uint64(c.id), 10) == ci.Name {
				err := leases.Delete(ctx, lease.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{
					UID: &lease.UID, ResourceVersion: &lease.ResourceVersion}})
				if k8serrors.IsConflict(err) {
					return fmt.Errorf("claim %s changed meanwhile; checking again next round", lease.Name)
				}
				if err != nil && !k8serrors.IsNotFound(err) {
					return err
				}
			}
		}
	}
	err = g.cs.CiliumV2.CiliumIdentities().Delete(ctx, ci.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{
		UID: &ci.UID, ResourceVersion: &ci.ResourceVersion}})
	if err != nil && !k8serrors.IsNotFound(err) {
		if k8serrors.IsConflict(err) {
			return fmt.Errorf("CiliumIdentity %s changed meanwhile; checking again next round", ci.Name)
		}
		return err
	}
	g.log.Info("Unused identity deleted", "identity", ci.Name, "unused-for-at-least", g.grace)
	return nil
}

// collectClaims deletes claims whose CiliumIdentity does not exist (an
// agent stopped between creating the claim and the identity, or a claim
// moved off a number), once they have been so for the grace period. The
// precondition on the claim's version leaves one alone that an agent has
// touched since.
func (g *collector) collectClaims(ctx context.Context, now time.Time) {
	present := map[string]bool{}
	for _, obj := range g.cluster.claims.GetIndexer().List() {
		lease := obj.(*coordinationv1.Lease)
		present[lease.Name] = true
		c, ok := claimOf(lease)
		if !ok {
			continue
		}
		if ident, ok := g.cluster.Get(c.id); ok && ident.Labels.String() == c.labels {
			delete(g.claimUnusedSince, lease.Name)
			continue
		}
		since, seen := g.claimUnusedSince[lease.Name]
		if !seen {
			g.claimUnusedSince[lease.Name] = now
			continue
		}
		if now.Sub(since) < g.grace {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, allocTimeout)
		err := g.cs.CoordinationV1().Leases(ClaimNamespace).Delete(dctx, lease.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &lease.UID, ResourceVersion: &lease.ResourceVersion}})
		cancel()
		if err != nil && !k8serrors.IsNotFound(err) {
			g.log.Warn("Stale identity claim not deleted; retrying", "claim", lease.Name, "error", err)
			continue
		}
		g.log.Info("Stale identity claim deleted", "claim", lease.Name, "identity", c.id, "labels", c.labels)
		delete(g.claimUnusedSince, lease.Name)
	}
	for name := range g.claimUnusedSince {
		if !present[name] {
			delete(g.claimUnusedSince, name)
		}
	}
}
