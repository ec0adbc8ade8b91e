package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Names of the cluster backend's objects.
const (
	// ClaimNamespace holds the claims (and the garbage collector's lock).
	ClaimNamespace = "membrane-system"
	// ClaimPrefix starts a claim's name; the rest is claimHashLen hex
	// digits of the SHA-256 of the canonical label set.
	ClaimPrefix = "membrane-id-"
	// ClaimLabel marks claims, so the agents watch only them.
	ClaimLabel = "membrane.io/identity-claim"
	// AnnotationIdentity and AnnotationLabels are what a claim holds: the
	// number of its label set and the set itself (canonical form), which
	// tells a hash collision from the claim of the same set.
	AnnotationIdentity = "membrane.io/identity"
	AnnotationLabels   = "membrane.io/labels"

	claimHashLen = 32
	// SourceCluster marks identities the cluster backend knows; SourceLocal
	// those of the node-local allocator.
	SourceCluster = "cluster"
	SourceLocal   = "local"
)

// errUnavailable marks failures of the cluster backend that a retry may
// fix (API server unreachable, too many lost races): the controller
// retries them on a timer.
var errUnavailable = errors.New("cluster identities unavailable")

// ClaimName is the name of the claim of the canonical label set key.
func ClaimName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return ClaimPrefix + hex.EncodeToString(sum[:])[:claimHashLen]
}

// ClusterAllocator keeps identities as CiliumIdentity objects, shared by
// every agent of the cluster: the same labels get the same number on every
// node. docs/identities.md explains why exactly one identity results when
// agents allocate the same new labels at once:
//
//   - a number is owned by the CiliumIdentity named by it (names are
//     unique: creating an existing one fails with AlreadyExists);
//   - a label set is owned by its claim, a Lease in ClaimNamespace named
//     by the hash of the set (ClaimName), holding the number. The claim is
//     created first; the CiliumIdentity only for the number the claim
//     holds; a number found taken moves the claim under its
//     resourceVersion.
//
// Lookups of known labels are answered from the agent's caches (informers
// of both kinds), so they work while the API server is down; a new label
// set needs the API server, and fails within the caller's context.
type ClusterAllocator struct {
	cs       *client.Clientset
	min, max tables.NumericIdentity

	idents cache.SharedIndexInformer // CiliumIdentities
	claims cache.SharedIndexInformer // claims in ClaimNamespace

	changed chan struct{}
	// event counts one watch event of a resource (the k8s-status
	// table's Events column); set before Start.
	event func(resource string)

	mu       sync.Mutex
	lastFail time.Time // last failure to reach the API server
	lastErr  error
	// pending: identities the slow path returned that the cache has not
	// shown yet (its watch lags, or reconnects after an outage), by name,
	// so they are not taken for deleted meanwhile. An event of the name
	// ends the entry, as does pendingTTL.
	pending map[string]pendingIdentity
}

type pendingIdentity struct {
	ident *tables.Identity
	added time.Time
}

// pendingTTL bounds how long an identity the cache does not show is
// trusted without it.
const pendingTTL = time.Minute

// failFast is how long after a failure to reach the API server further
// allocations of new labels fail at once with the same error, so a queue
// of endpoints does not wait a timeout each while it is down.
const failFast = 3 * time.Second

// maxAttempts bounds the rounds of one allocation (each lost race is one).
const maxAttempts = 20

// NewClusterAllocator builds the backend; Start starts its caches.
func NewClusterAllocator(cs *client.Clientset, min, max tables.NumericIdentity) *ClusterAllocator {
	a := &ClusterAllocator{cs: cs, min: min, max: max, changed: make(chan struct{}, 1), pending: map[string]pendingIdentity{},
		event: func(string) {}}
	ids := cs.CiliumV2.CiliumIdentities()
	a.idents = cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ids.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ids.Watch(ctx, o)
		},
	}, &v2.CiliumIdentity{}, 0, cache.Indexers{})
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(ClaimNamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ClaimLabel }))
	a.claims = f.Coordination().V1().Leases().Informer()
	claim := func() { a.event(ClaimsResource); a.notify() }
	a.claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { claim() },
		UpdateFunc: func(any, any) { claim() },
		DeleteFunc: func(any) { claim() },
	})
	ident := func(obj any) { a.event(IdentitiesResource); a.seen(obj); a.notify() }
	a.idents.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    ident,
		UpdateFunc: func(_, obj any) { ident(obj) },
		DeleteFunc: ident,
	})
	return a
}

// SetWatchErrorHandlers reports the caches' watch errors (to the
// k8s-status table).
func (a *ClusterAllocator) SetWatchErrorHandlers(h func(resource string) cache.WatchErrorHandlerWithContext) {
	a.idents.SetWatchErrorHandlerWithContext(h(IdentitiesResource))
	a.claims.SetWatchErrorHandlerWithContext(h(ClaimsResource))
}

// CountEvents has f called for each watch event the caches receive, with
// the resource's name; call it before Start.
func (a *ClusterAllocator) CountEvents(f func(resource string)) { a.event = f }

// The resources' names in the k8s-status table.
const (
	IdentitiesResource = "ciliumidentities"
	ClaimsResource     = "identity-claims"
)

// Start runs the caches until ctx ends.
func (a *ClusterAllocator) Start(ctx context.Context) {
	go a.idents.RunWithContext(ctx)
	go a.claims.RunWithContext(ctx)
}

// WaitSynced waits until both caches hold the cluster's objects or ctx
// ends; it reports whether they synced.
func (a *ClusterAllocator) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), a.idents.HasSynced, a.claims.HasSynced)
}

// Synced reports whether both caches have synced.
func (a *ClusterAllocator) Synced() bool { return a.idents.HasSynced() && a.claims.HasSynced() }

// Changed is signalled (coalesced) when a cached object changes.
func (a *ClusterAllocator) Changed() <-chan struct{} { return a.changed }

func (a *ClusterAllocator) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Where says where identities live, for logs.
func (a *ClusterAllocator) Where() string {
	return "CiliumIdentity objects at " + a.cs.Server
}

// identityOf is the identity a CiliumIdentity defines; ok is false for an
// object that defines none (a name that is not a cluster identity,
// unreadable labels).
func (a *ClusterAllocator) identityOf(ci *v2.CiliumIdentity) (*tables.Identity, bool) {
	n, err := strconv.ParseUint(ci.Name, 10, 32)
	if err != nil || tables.NumericIdentity(n) < a.min || tables.NumericIdentity(n) > a.max {
		return nil, false
	}
	ls, err := SecurityLabels(ci)
	if err != nil {
		return nil, false
	}
	return &tables.Identity{ID: tables.NumericIdentity(n), Labels: ls, Source: SourceCluster}, true
}

// SecurityLabels parses a CiliumIdentity's security-labels.
func SecurityLabels(ci *v2.CiliumIdentity) (labels.Labels, error) {
	ls := make([]labels.Label, 0, len(ci.SecurityLabels))
	for sk, v := range ci.SecurityLabels {
		src, key, ok := strings.Cut(sk, ":")
		if !ok {
			return nil, fmt.Errorf("CiliumIdentity %s: security label %q has no source", ci.Name, sk)
		}
		ls = append(ls, labels.Label{Source: src, Key: key, Value: v})
	}
	out := labels.New(ls...)
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("CiliumIdentity %s: %w", ci.Name, err)
	}
	return out, nil
}

// claim is what a claim Lease holds.
type claim struct {
	id     tables.NumericIdentity
	labels string
}

func claimOf(l *coordinationv1.Lease) (claim, bool) {
	n, err := strconv.ParseUint(l.Annotations[AnnotationIdentity], 10, 32)
	if err != nil {
		return claim{}, false
	}
	return claim{id: tables.NumericIdentity(n), labels: l.Annotations[AnnotationLabels]}, true
}

// cached returns the identity of key from the caches: the claim of key
// and the CiliumIdentity of its number, agreeing.
func (a *ClusterAllocator) cached(key string) (*tables.Identity, bool) {
	obj, ok, _ := a.claims.GetIndexer().GetByKey(ClaimNamespace + "/" + ClaimName(key))
	if !ok {
		return nil, false
	}
	c, ok := claimOf(obj.(*coordinationv1.Lease))
	if !ok || c.labels != key {
		return nil, false
	}
	ident, ok := a.Get(c.id)
	if !ok || ident.Labels.String() != key {
		return nil, false
	}
	return ident, true
}

// seen ends the pending entry of a CiliumIdentity the cache has news of.
func (a *ClusterAllocator) seen(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if ci, ok := obj.(*v2.CiliumIdentity); ok {
		a.mu.Lock()
		delete(a.pending, ci.Name)
		a.mu.Unlock()
	}
}

// remember keeps an identity the slow path returned until the cache
// shows it.
func (a *ClusterAllocator) remember(ident *tables.Identity) {
	name := strconv.FormatUint(uint64(ident.ID), 10)
	if _, ok, _ := a.idents.GetIndexer().GetByKey(name); ok {
		return
	}
	a.mu.Lock()
	a.pending[name] = pendingIdentity{ident: ident, added: time.Now()}
	a.mu.Unlock()
}

// pendingList returns the live pending identities, dropping expired ones.
func (a *ClusterAllocator) pendingList() map[string]*tables.Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]*tables.Identity{}
	for name, p := range a.pending {
		if time.Since(p.added) > pendingTTL {
			delete(a.pending, name)
			continue
		}
		c := *p.ident
		out[name] = &c
	}
	return out
}

// Get returns identity id from the cache (or pending).
func (a *ClusterAllocator) Get(id tables.NumericIdentity) (*tables.Identity, bool) {
	if r := reserved(id); r != nil {
		return r, true
	}
	name := strconv.FormatUint(uint64(id), 10)
	obj, ok, _ := a.idents.GetIndexer().GetByKey(name)
	if !ok {
		ident, ok := a.pendingList()[name]
		return ident, ok
	}
	return a.identityOf(obj.(*v2.CiliumIdentity))
}

// Identities returns the reserved identities and every cached (or
// pending) CiliumIdentity.
func (a *ClusterAllocator) Identities() []*tables.Identity {
	out := ReservedIdentities()
	pending := a.pendingList()
	for _, obj := range a.idents.GetIndexer().List() {
		ci := obj.(*v2.CiliumIdentity)
		delete(pending, ci.Name)
		if ident, ok := a.identityOf(ci); ok {
			out = append(out, ident)
		}
	}
	for _, ident := range pending {
		out = append(out, ident)
	}
	return out
}

func reserved(id tables.NumericIdentity) *tables.Identity {
	for _, r := range ReservedIdentities() {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// Release does nothing: an identity of the cluster may be used on other
// nodes; the garbage collector deletes those no endpoint uses.
func (a *ClusterAllocator) Release(...tables.NumericIdentity) ([]tables.NumericIdentity, error) {
	return nil, nil
}

// Allocate returns the identity of ls, creating it in the cluster if it
// has none.
func (a *ClusterAllocator) Allocate(ctx context.Context, ls labels.Labels) (*tables.Identity, bool, error) {
	return a.Restore(ctx, ls, tables.IdentityUnknown)
}

// Restore is Allocate that prefers number want for labels that have no
// identity in the cluster (an endpoint restored after a restart, or one
// whose identity was deleted under it).
func (a *ClusterAllocator) Restore(ctx context.Context, ls labels.Labels, want tables.NumericIdentity) (*tables.Identity, bool, error) {
	if err := ls.Validate(); err != nil {
		return nil, false, fmt.Errorf("allocate identity: %w", err)
	}
	key := ls.String()
	for _, r := range ReservedIdentities() {
		if r.Labels.String() == key {
			return r, false, nil
		}
	}
	if ident, ok := a.cached(key); ok {
		return ident, false, nil
	}
	a.mu.Lock()
	if time.Since(a.lastFail) < failFast {
		err := a.lastErr
		a.mu.Unlock()
		return nil, false, err
	}
	a.mu.Unlock()
	ident, isNew, err := a.allocate(ctx, ls, key, want)
	if err != nil {
		err = fmt.Errorf("allocate identity for labels %q: %w", key, err)
		if !errors.Is(err, ErrExhausted) && !errors.Is(err, errCollision) {
			err = fmt.Errorf("%w: %w", errUnavailable, err)
			if isUnreachable(err) {
				a.mu.Lock()
				a.lastFail, a.lastErr = time.Now(), err
				a.mu.Unlock()
			}
		}
		return nil, false, err
	}
	a.remember(ident)
	return ident, isNew, nil
}

// isUnreachable reports whether err says the API server did not answer
// (as opposed to answering no).
func isUnreachable(err error) bool {
	var st k8serrors.APIStatus
	if errors.As(err, &st) {
		return k8serrors.IsServerTimeout(err) || k8serrors.IsTimeout(err) || k8serrors.IsServiceUnavailable(err)
	}
	return true
}

// errCollision: two label sets with one claim name (a SHA-256 prefix
// collision). Never expected; reported rather than mixed up.
var errCollision = errors.New("claim name collision")

// allocate is the slow path: claim the label set, then create or adopt
// the CiliumIdentity of the claimed number. Every step that loses a race
// starts the round again from the claim; see docs/identities.md.
func (a *ClusterAllocator) allocate(ctx context.Context, ls labels.Labels, key string, want tables.NumericIdentity) (*tables.Identity, bool, error) {
	leases := a.cs.CoordinationV1().Leases(ClaimNamespace)
	ids := a.cs.CiliumV2.CiliumIdentities()
	name := ClaimName(key)
	var tried []tables.NumericIdentity // numbers found taken in this call
	_, claimExists, _ := a.claims.GetIndexer().GetByKey(ClaimNamespace + "/" + name)
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		// 1. The claim: create it with a free number, or read it. The
		// cache says which to try first (a create saves a round trip for
		// new labels); the API server's answer decides.
		var lease *coordinationv1.Lease
		var err error
		if !claimExists {
			n, ok := a.pickFree(want, tried)
			if !ok {
				return nil, false, a.exhausted()
			}
			lease, err = leases.Create(ctx, newClaim(name, key, n, a.cs.NodeName), metav1.CreateOptions{})
			if k8serrors.IsAlreadyExists(err) {
				claimExists = true
				continue // another agent claimed the set first: read its claim
			}
			if k8serrors.IsNotFound(err) {
				return nil, false, fmt.Errorf("create claim %s/%s: %w (the namespace must exist: kubectl apply -f install/kubernetes/00-namespace.yaml)", ClaimNamespace, name, err)
			}
			claimExists = err == nil
		} else {
			lease, err = leases.Get(ctx, name, metav1.GetOptions{})
			if k8serrors.IsNotFound(err) {
				claimExists = false
				continue
			}
		}
		if err != nil {
			return nil, false, fmt.Errorf("claim %s/%s: %w", ClaimNamespace, name, err)
		}
		c, ok := claimOf(lease)
		if !ok {
			// Unreadable: written by something else. Leave it to a human.
			return nil, false, fmt.Errorf("%w: claim %s/%s has no valid %s annotation; delete it", errCollision, ClaimNamespace, name, AnnotationIdentity)
		}
		if c.labels != key {
			return nil, false, fmt.Errorf("%w: claim %s/%s holds labels %q", errCollision, ClaimNamespace, name, c.labels)
		}

		// 2. The number: create its CiliumIdentity, or find it there.
		ci := v2.NewCiliumIdentity(uint32(c.id), ls)
		created, err := ids.Create(ctx, ci, metav1.CreateOptions{})
		switch {
		case err == nil:
			// 3. Still ours? The claim may have moved or gone (a garbage
			// collector, a stale read) between 1 and 2: then this object
			// is an orphan; remove it and start over.
			ok, err := a.stillClaimed(ctx, lease, c)
			if err != nil {
				return nil, false, err
			}
			if ok {
				return &tables.Identity{ID: c.id, Labels: ls, Source: SourceCluster}, true, nil
			}
			if err := a.deleteOrphan(ctx, created); err != nil {
				return nil, false, err
			}
			continue
		case k8serrors.IsAlreadyExists(err):
			existing, err := ids.Get(ctx, ci.Name, metav1.GetOptions{})
			if k8serrors.IsNotFound(err) {
				continue // deleted meanwhile: try again
			}
			if err != nil {
				return nil, false, fmt.Errorf("get CiliumIdentity %s: %w", ci.Name, err)
			}
			if ident, ok := a.identityOf(existing); ok && ident.Labels.String() == key {
				// Created by another agent: adopt it, if the claim still
				// holds it (the garbage collector deletes the claim first).
				ok, err := a.stillClaimed(ctx, lease, c)
				if err != nil {
					return nil, false, err
				}
				if ok {
					return ident, false, nil
				}
				continue
			}
			// The number belongs to other labels: move the claim to
			// another number, unless someone moved it already.
			tried = append(tried, c.id)
			n, ok := a.pickFree(tables.IdentityUnknown, tried)
			if !ok {
				return nil, false, a.exhausted()
			}
			upd := lease.DeepCopy()
			upd.Annotations[AnnotationIdentity] = strconv.FormatUint(uint64(n), 10)
			if _, err := leases.Update(ctx, upd, metav1.UpdateOptions{}); err != nil && !k8serrors.IsConflict(err) && !k8serrors.IsNotFound(err) {
				return nil, false, fmt.Errorf("move claim %s/%s: %w", ClaimNamespace, name, err)
			}
			continue
		default:
			return nil, false, fmt.Errorf("create CiliumIdentity %s: %w", ci.Name, err)
		}
	}
	return nil, false, fmt.Errorf("lost %d races in a row", maxAttempts)
}

// stillClaimed reports whether the claim read as lease still holds c.
func (a *ClusterAllocator) stillClaimed(ctx context.Context, lease *coordinationv1.Lease, c claim) (bool, error) {
	cur, err := a.cs.CoordinationV1().Leases(ClaimNamespace).Get(ctx, lease.Name, metav1.GetOptions{})
	if k8serrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim %s/%s: %w", ClaimNamespace, lease.Name, err)
	}
	cc, ok := claimOf(cur)
	return cur.UID == lease.UID && ok && cc == c, nil
}

// deleteOrphan deletes the CiliumIdentity this agent just created for a
// claim that no longer holds it. The preconditions (its UID and
// resourceVersion) leave alone an object created since by another agent.
func (a *ClusterAllocator) deleteOrphan(ctx context.Context, ci *v2.CiliumIdentity) error {
	err := a.cs.CiliumV2.CiliumIdentities().Delete(ctx, ci.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &ci.UID, ResourceVersion: &ci.ResourceVersion}})
	if err != nil && !k8serrors.IsNotFound(err) && !k8serrors.IsConflict(err) {
		return fmt.Errorf("delete orphaned CiliumIdentity %s: %w", ci.Name, err)
	}
	return nil
}

func (a *ClusterAllocator) exhausted() error {
	return fmt.Errorf("%w: all %d cluster identities (%d..%d) are in use; fewer distinct security label sets are needed (e.g. drop per-pod labels with --identity-label-filter)",
		ErrExhausted, a.max-a.min+1, a.min, a.max)
}

// pickFree returns want if it looks free in the caches, else a random
// number that does: random, so agents allocating different label sets at
// once rarely pick the same number, and a number just deleted is rarely
// handed out again soon. A number that looks free may not be (the cache
// lags); the CiliumIdentity's creation decides.
func (a *ClusterAllocator) pickFree(want tables.NumericIdentity, avoid []tables.NumericIdentity) (tables.NumericIdentity, bool) {
	taken := func(n tables.NumericIdentity) bool {
		for _, t := range avoid {
			if t == n {
				return true
			}
		}
		_, ok, _ := a.idents.GetIndexer().GetByKey(strconv.FormatUint(uint64(n), 10))
		return ok
	}
	if want >= a.min && want <= a.max && !taken(want) {
		return want, true
	}
	size := uint64(a.max-a.min) + 1
	start := rand.Uint64N(size)
	for i := range size {
		n := a.min + tables.NumericIdentity((start+i)%size)
		if !taken(n) {
			return n, true
		}
	}
	return 0, false
}

func newClaim(name, key string, id tables.NumericIdentity, node string) *coordinationv1.Lease {
	holder := node
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ClaimNamespace,
			Labels:    map[string]string{ClaimLabel: "", "app.kubernetes.io/managed-by": "membrane"},
			Annotations: map[string]string{
				AnnotationIdentity: strconv.FormatUint(uint64(id), 10),
				AnnotationLabels:   key,
			},
		},
		// The holder is informative (who created the claim); claims are
		// not renewed and do not expire.
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder},
	}
}
