// Package remoteendpoints puts the pods of the other nodes in this
// node's ipcache: every address of every CiliumEndpoint (CEP) another
// node's agent wrote maps to that CEP's identity (source "remote"), so
// the datapath judges a packet from a pod of another node by the pod's
// identity, not as world. A row appears when the CEP is listed or
// created, moves when the CEP's addresses or identity change, and goes
// with the CEP (the pod's end, or its garbage collection with the Pod).
//
// It watches the CEPs of every namespace except this node's own (label
// selector membrane.io/node!=NODE): one watch event per CEP write, and
// each agent writes a CEP once per pod start and once more only when
// something the cluster sees changes (docs/remote-endpoints.md has the
// numbers at scale). The informer keeps only the fields the ipcache
// needs. Conflicts are settled the same way on every node: a local row
// (this node's endpoint, its host addresses) wins over a remote claim,
// which is logged; between two remote CEPs claiming one address, the
// newest wins, then the smallest namespace/name.
//
// A CEP counts only while its node is in the nodes table (once that is
// listed from the API server): a node deleted from the cluster (kubectl
// delete ciliumnode) takes its pods' rows with it at once, though their
// CEPs stay until the Pods are garbage collected, and a node that comes
// back brings them back. Before the nodes table is listed every CEP
// counts, so nothing is flushed at a start without the API server.
//
// The loader prunes the pinned ipcache only once this cell has written
// the rows of the listed CEPs (a table initializer): an agent that
// restarts, or starts while the API server is unreachable, flushes none
// of the remote entries the pinned map holds. While the API server is
// away the rows stay as they are.
//
// Reads: CiliumEndpoint objects of other nodes, ipcache (to give an
// address back to a remote CEP when the local row holding it goes),
// nodes (which nodes the cluster has).
// Writes: ipcache (source "remote"), the k8s-status row
// "remote-ciliumendpoints".
// Provides: EndpointIdentities (cells/k8s/client), the identities its
// cache of CEPs carries: the identity garbage collector's view of what
// the other nodes use, so no agent watches the CEPs twice.
// Try it: membrane statedb ipcache; membrane bpf ipcache list (SOURCE
// remote); kubectl get cep -A -l 'membrane.io/node!=NODE'.
package remoteendpoints

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/endpoints"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell watches the other nodes' CiliumEndpoints in Kubernetes mode.
var Cell = cell.Module(
	"k8s-remote-endpoints",
	"Pods of other nodes in the ipcache from their CiliumEndpoints",
	cell.Provide(register),
	// The ipcache needs the watcher whether or not another cell asks for
	// its cache.
	cell.Invoke(func(k8scell.EndpointIdentities) {}),
)

// Resource names the cell's row in the k8s-status table.
const Resource = "remote-ciliumendpoints"

// resync re-delivers every cached CEP now and then, so a row that a
// missed change left stale converges.
const resync = 10 * time.Minute

// register starts the watcher in Kubernetes mode; its cache of the
// other nodes' CEPs also tells the identity garbage collector which
// identities they use.
func register(cs *client.Clientset, status *k8scell.Status, jobs job.Group, log *slog.Logger,
	db *statedb.DB, ipcache statedb.RWTable[*tables.IPCacheEntry], nodes statedb.Table[*tables.Node]) k8scell.EndpointIdentities {
	w := newWatcher(log, db, ipcache)
	if !cs.IsEnabled() {
		return w // never synced
	}
	// Before the hive starts: the loader must find the ipcache pending.
	wtxn := db.WriteTxn(ipcache)
	initDone := ipcache.RegisterInitializer(wtxn, "k8s-remote-endpoints")
	wtxn.Commit()
	w.cs, w.status, w.initDone, w.nodes = cs, status, initDone, nodes
	jobs.Add(job.OneShot("watch-remote-endpoints", w.run))
	return w
}

type watcher struct {
	cs       *client.Clientset
	status   *k8scell.Status
	log      *slog.Logger
	db       *statedb.DB
	ipcache  statedb.RWTable[*tables.IPCacheEntry]
	initDone func(statedb.WriteTxn)
	// nodes says which nodes the cluster has; nil: every CEP counts.
	nodes statedb.Table[*tables.Node]

	// store is the informer's cache of remote CEPs (slimmed).
	store cache.Store
	// synced is set once the listed CEPs are in the ipcache (and store is
	// set): AddIdentities reads store from other goroutines after it.
	synced atomic.Bool

	mu        sync.Mutex
	claims    *claimants              // the CEPs claiming each address, from the events
	conflicts map[netip.Prefix]string // the remote CEP a local row keeps out, logged once
	known     nodeSet                 // the nodes whose CEPs count; nil: all
}

func newWatcher(log *slog.Logger, db *statedb.DB, ipcache statedb.RWTable[*tables.IPCacheEntry]) *watcher {
	return &watcher{log: log, db: db, ipcache: ipcache, claims: newClaimants(), conflicts: map[netip.Prefix]string{}}
}

// HasSynced reports whether the other nodes' CEPs have been listed.
func (w *watcher) HasSynced() bool { return w.synced.Load() }

// AddIdentities sets used[id] for every cached CEP's identity (none
// before the CEPs are listed).
func (w *watcher) AddIdentities(used map[tables.NumericIdentity]bool) {
	if !w.synced.Load() {
		return
	}
	for _, obj := range w.store.List() {
		if r, ok := obj.(*record); ok && r.identity != 0 {
			used[tables.NumericIdentity(r.identity)] = true
		}
	}
}

// selector matches the CEPs of every node but this one (and CEPs without
// the node label, which some other writer made).
func selector(node string) (string, error) {
	req, err := labels.NewRequirement(endpoints.NodeLabel, selection.NotEquals, []string{node})
	if err != nil {
		return "", err
	}
	return labels.NewSelector().Add(*req).String(), nil
}

func (w *watcher) run(ctx context.Context, health cell.Health) error {
	sel, err := selector(w.cs.NodeName)
	if err != nil {
		return fmt.Errorf("node name %q cannot be a label value: %w", w.cs.NodeName, err)
	}
	ceps := w.cs.CiliumV2.CiliumEndpoints(metav1.NamespaceAll)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return ceps.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return ceps.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &v2.CiliumEndpoint{}, resync, cache.Indexers{})
	if err := inf.SetTransform(slim); err != nil {
		return err
	}
	w.store = inf.GetStore()
	handler, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.status.Event(Resource); w.changed(nil, obj) },
		UpdateFunc: func(old, obj any) { w.status.Event(Resource); w.changed(old, obj) },
		DeleteFunc: func(obj any) { w.status.Event(Resource); w.changed(obj, nil) },
	})
	if err != nil {
		return err
	}
	if err := inf.SetWatchErrorHandlerWithContext(w.status.WatchErrors(Resource, w.log)); err != nil {
		return err
	}
	w.status.Cache(Resource, false, "")
	nodesChanged := w.refreshNodes()

	// The ipcache's changes, registered before any row is written: a
	// local row that goes gives its address back to a remote claim.
	wtxn := w.db.WriteTxn(w.ipcache)
	changes, err := w.ipcache.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return err
	}

	health.OK("waiting for the CiliumEndpoints of other nodes from " + w.cs.Server)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, handler.HasSynced) {
		return nil // stopping
	}
	// Every listed CEP's rows are written: drop the remote rows no CEP
	// explains and let the loader prune the pinned map.
	wtxn = w.db.WriteTxn(w.ipcache)
	for row := range w.ipcache.All(wtxn) {
		if row.Source == Source {
			w.apply(wtxn, row.Prefix)
		}
	}
	w.initDone(wtxn)
	wtxn.Commit()
	w.synced.Store(true)
	n := len(w.store.ListKeys())
	w.status.Cache(Resource, true, fmt.Sprintf("%d endpoints of other nodes", n))
	w.log.Info("Endpoints of other nodes synced into the ipcache", "server", w.cs.Server, "endpoints", n)
	health.OK(fmt.Sprintf("synced: %d endpoints of other nodes", n))

	for {
		seq, watchCh := changes.Next(w.db.ReadTxn())
		var regive []netip.Prefix
		for ch := range seq {
			if ch.Deleted && ch.Object.Source != Source {
				regive = append(regive, ch.Object.Prefix)
			}
		}
		if len(regive) > 0 {
			w.sync(regive)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watchCh:
		case <-nodesChanged:
			nodesChanged = w.refreshNodes()
		}
	}
}

// changed records which addresses the CEP of an event claims and writes
// the rows of those it had and those it has.
func (w *watcher) changed(old, obj any) {
	var key string
	var from, to []netip.Prefix
	for i, o := range []any{old, obj} {
		if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = t.Obj
		}
		r, ok := o.(*record)
		if !ok {
			continue
		}
		key = r.key
		if i == 0 {
			from = r.prefixes()
		} else {
			to = r.prefixes()
		}
	}
	if key == "" {
		return
	}
	if _, gone := old.(cache.DeletedFinalStateUnknown); gone || obj == nil {
		to = nil
	}
	w.mu.Lock()
	w.claims.move(key, from, to)
	w.mu.Unlock()
	w.sync(append(from, to...))
}

// sync makes the rows of the given prefixes what the cache says, in one
// write transaction. It reads the cache, not the event, so the last call
// wins with the newest state.
func (w *watcher) sync(ps []netip.Prefix) {
	if len(ps) == 0 {
		return
	}
	wtxn := w.db.WriteTxn(w.ipcache)
	defer wtxn.Abort()
	for _, p := range ps {
		w.apply(wtxn, p)
	}
	wtxn.Commit()
}

// apply makes the row of one prefix what the remote claims on it say.
func (w *watcher) apply(wtxn statedb.WriteTxn, p netip.Prefix) {
	want, ok := w.winner(p)
	have, _, found := w.ipcache.Get(wtxn, tables.IPCachePrefixIndex.Query(p))
	if !found {
		have = nil
	}
	switch decide(have, want, ok) {
	case write:
		w.ipcache.Insert(wtxn, &tables.IPCacheEntry{Prefix: p, Identity: want.Identity, Source: Source, Status: reconciler.StatusPending()})
	case remove:
		w.ipcache.Delete(wtxn, have)
	case conflict:
		w.mu.Lock()
		if w.conflicts[p] != want.Key {
			w.conflicts[p] = want.Key
			w.log.Warn("An address of another node's endpoint is held by a local row; the local row wins",
				"prefix", p, "endpoint", want.Key, "node", want.Node, "identity", want.Identity,
				"local-source", have.Source, "local-identity", have.Identity)
		}
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	delete(w.conflicts, p)
	w.mu.Unlock()
}

// winner is the remote claim the row of p follows: among the CEPs the
// events say claim p, those whose cached version still does.
func (w *watcher) winner(p netip.Prefix) (claim, bool) {
	w.mu.Lock()
	keys := w.claims.keys(p)
	w.mu.Unlock()
	var claims []claim
	for _, key := range keys {
		o, exists, err := w.store.GetByKey(key)
		if err != nil || !exists {
			continue
		}
		r, ok := o.(*record)
		if !ok {
			continue
		}
		c, err := claimOf(r)
		if err != nil {
			w.log.Debug("CiliumEndpoint of another node not in the ipcache", "error", err)
			continue
		}
		if slices.Contains(c.Prefixes, p) && w.counts(c) {
			claims = append(claims, c)
		}
	}
	if len(claims) > 1 {
		best, _ := winner(claims)
		w.log.Info("Several endpoints of other nodes claim one address; the newest wins",
			"prefix", p, "winner", best.Key, "claims", len(claims))
	}
	return winner(claims)
}

// counts reports whether a claim's node is one of the cluster's.
func (w *watcher) counts(c claim) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.known.has(c.Node)
}

// refreshNodes reads the nodes table into known and, where the set of
// nodes changed, rewrites the rows of the CEPs of the nodes that came or
// went. It returns a channel that closes when the table changes next.
func (w *watcher) refreshNodes() <-chan struct{} {
	if w.nodes == nil {
		return nil
	}
	known, changed := readNodes(w.db.ReadTxn(), w.nodes)
	w.mu.Lock()
	old := w.known
	w.known = known
	w.mu.Unlock()
	if w.store == nil || (old != nil && known != nil && maps.Equal(old, known)) {
		return changed // most changes of the table are of its routes' status
	}
	var ps []netip.Prefix
	moved := map[string]int{}
	for _, o := range w.store.List() {
		r, ok := o.(*record)
		if !ok {
			continue
		}
		if node := r.nodeName(); old.has(node) != known.has(node) {
			ps = append(ps, r.prefixes()...)
			moved[node]++
		}
	}
	for node, n := range moved {
		if known.has(node) {
			w.log.Info("Endpoints of a node of the cluster into the ipcache", "node", node, "endpoints", n)
		} else {
			w.log.Info("Endpoints of a node no longer in the cluster out of the ipcache", "node", node, "endpoints", n)
		}
	}
	w.sync(ps)
	return changed
}
