// Package policies feeds the policy repository from the cluster: it
// watches CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and
// networking.k8s.io/v1 NetworkPolicy objects and hands each one's rules
// to the repository (policyrepo.Repository.SetObjects, source "k8s"), so
// they are enforced exactly like the same manifest given to `membrane
// policy import`, with the same derived labels (derived-from, name,
// namespace, uid). An update replaces the object's rules; a delete
// removes them.
//
// Start: the rules table gets the initializer "k8s-policies", completed
// once the three caches have synced and the repository holds exactly the
// cluster's objects (the rules of objects deleted while the agent was
// down go; those of `membrane policy import` stay). The policy engine
// computes nothing before, so no endpoint runs without the cluster's
// policies after a restart, and while the API server is unreachable at
// start the engine waits for it.
//
// Refusals: an object the parser refuses (an unknown field, an invalid
// selector, an L7 section, a NetworkPolicy's named port) is not applied.
// If an earlier version of it was accepted, that version stays enforced:
// the refused version cannot be enforced as written, dropping the old one
// would open what it isolated (a pod no policy selects allows
// everything), and a deny of its own would need the selector the refused
// version may not have. The agent logs "Policy refused" with the object
// and the field, writes a Warning event (reason PolicyRefused) on the
// object, records the error in the resource's k8s-status row, and keeps
// serving.
//
// Reads: the API server (list and watch). Writes: policy-rules and
// policy-revision through the repository; Events.
// Try it: kubectl apply -f cnp.yaml; membrane policy get;
// kubectl get events --field-selector reason=PolicyRefused;
// membrane statedb k8s-status.
package policies

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/policyrepo"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/metrics"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell watches the cluster's policies when the agent runs in Kubernetes
// mode.
var Cell = cell.Module(
	"k8s-policies",
	"Network policies from the Kubernetes API server",
	cell.Invoke(register),
)

// ReasonRefused is the reason of the Warning event on a refused policy.
const ReasonRefused = "PolicyRefused"

// resync re-delivers every cached object now and then: a write that
// failed (the state file) is retried, an unchanged object writes nothing.
const resync = 10 * time.Minute

// retryInterval spaces the attempts of the first convergence.
const retryInterval = 2 * time.Second

type params struct {
	cell.In

	Clientset *client.Clientset
	Status    *k8scell.Status
	Jobs      job.Group
	Log       *slog.Logger
	DB        *statedb.DB
	Rules     statedb.RWTable[*tables.PolicyRule]
	Repo      *policyrepo.Repository
}

func register(p params) {
	if !p.Clientset.IsEnabled() {
		return
	}
	w := &watcher{cs: p.Clientset, status: p.Status, log: p.Log, db: p.DB, rules: p.Rules, repo: p.Repo,
		refused: map[api.ObjectRef]string{}}
	// Before the hive starts: the policy engine must find it pending.
	wtxn := p.DB.WriteTxn(p.Rules)
	w.initDone = p.Rules.RegisterInitializer(wtxn, "k8s-policies")
	wtxn.Commit()
	p.Jobs.Add(job.OneShot("watch-policies", w.run))
}

type watcher struct {
	cs       *client.Clientset
	status   *k8scell.Status
	log      *slog.Logger
	db       *statedb.DB
	rules    statedb.RWTable[*tables.PolicyRule]
	repo     *policyrepo.Repository
	initDone func(statedb.WriteTxn)
	recorder record.EventRecorder

	informers map[string]cache.SharedIndexInformer // by resource

	mu      sync.Mutex // serialises the convergence and the events
	synced  bool       // the repository holds the cluster's objects: apply events
	refused map[api.ObjectRef]string
}

// listWatch is the ListerWatcher of a cilium.io/v2 typed client.
func listWatch[T runtime.Object](list func(context.Context, metav1.ListOptions) (T, error), w func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return list(ctx, o) },
		WatchFuncWithContext: w,
	}
}

func (w *watcher) run(ctx context.Context, health cell.Health) error {
	rec, stopEvents, err := k8scell.NewRecorder(ctx, w.cs)
	if err != nil {
		return err
	}
	defer stopEvents()
	w.recorder = rec

	cnps, ccnps := w.cs.CiliumV2.CiliumNetworkPolicies(""), w.cs.CiliumV2.CiliumClusterwideNetworkPolicies()
	factory := informers.NewSharedInformerFactory(w.cs, resync)
	w.informers = map[string]cache.SharedIndexInformer{
		ResourceCNP: cache.NewSharedIndexInformer(listWatch(cnps.List, cnps.Watch), &v2.CiliumNetworkPolicy{}, resync,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		ResourceCCNP: cache.NewSharedIndexInformer(listWatch(ccnps.List, ccnps.Watch), &v2.CiliumClusterwideNetworkPolicy{}, resync, cache.Indexers{}),
		ResourceNP:   factory.Networking().V1().NetworkPolicies().Informer(),
	}
	for resource, inf := range w.informers {
		changed := func(obj any) { w.status.Event(resource); w.changed(resource, obj) }
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    changed,
			UpdateFunc: func(_, obj any) { changed(obj) },
			DeleteFunc: changed,
		}); err != nil {
			return err
		}
		if err := inf.SetWatchErrorHandlerWithContext(w.status.WatchErrors(resource, w.log)); err != nil {
			return err
		}
		w.status.Cache(resource, false, "")
	}

	health.OK("waiting for the policies of " + w.cs.Server)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range []cache.SharedIndexInformer{w.informers[ResourceCNP], w.informers[ResourceCCNP]} {
		wg.Add(1)
		go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for resource, inf := range w.informers {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return nil // stopping
		}
		w.status.Cache(resource, true, "every "+kindOf[resource])
	}
	for !w.converge() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryInterval):
		}
	}
	wtxn := w.db.WriteTxn(w.rules)
	w.initDone(wtxn)
	wtxn.Commit()
	health.OK("synced: CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies, NetworkPolicies")
	<-ctx.Done()
	return nil
}

// converge makes the repository's k8s rules those of the cached objects:
// the rules of objects gone from the cluster are removed, refused objects
// keep what they had. From then on events apply one object at a time.
func (w *watcher) converge() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	objs := policyrepo.Objects{}
	n, refused := 0, 0
	for resource, inf := range w.informers {
		for _, obj := range inf.GetStore().List() {
			ref, rules, ok := w.translate(resource, obj)
			if !ok {
				refused++
			}
			objs[ref] = rules
			n++
		}
	}
	rev, changed, err := w.repo.SetObjects(tables.PolicySourceK8s, objs, true)
	if err != nil {
		w.log.Error("Cluster policies not written to the policy repository; retrying", "error", err)
		return false
	}
	w.synced = true
	w.log.Info("Policies synced from the API server", "server", w.cs.Server, "objects", n, "refused", refused, "changed", changed, "revision", rev)
	return true
}

// changed applies one object's current state (from its informer's cache,
// so the newest wins) once the first convergence is done.
func (w *watcher) changed(resource string, obj any) {
	ref, ok := objectRef(resource, obj)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.synced {
		return // converge reads the cache
	}
	key := ref.Name
	if ref.Namespace != "" {
		key = ref.Namespace + "/" + ref.Name
	}
	cur, exists, err := w.informers[resource].GetStore().GetByKey(key)
	if err != nil {
		w.log.Warn("Policy not read from the cache", "object", ref.String(), "error", err)
		return
	}
	rules := []api.ParsedRule{} // gone: no rules
	if exists {
		if ref, rules, ok = w.translate(resource, cur); !ok {
			return // refused: the accepted version, if any, stays
		}
	} else {
		delete(w.refused, ref)
	}
	if _, _, err := w.repo.SetObjects(tables.PolicySourceK8s, policyrepo.Objects{ref: rules}, false); err != nil {
		w.log.Error("Policy not written to the policy repository; retried at the next resync", "object", ref.String(), "error", err)
		w.status.Error(resource, fmt.Errorf("%s not applied: %w", ref, err))
	}
}

// translate is an object's rules, or nil (keep what it had) when refused;
// a refusal is logged, recorded and written as an event once per version.
func (w *watcher) translate(resource string, obj any) (api.ObjectRef, []api.ParsedRule, bool) {
	ref, _ := objectRef(resource, obj)
	rules, err := Rules(obj)
	if err == nil {
		delete(w.refused, ref)
		return ref, rules, true
	}
	m, _ := meta.Accessor(obj)
	version := m.GetResourceVersion()
	if w.refused[ref] == version {
		return ref, nil, false // reported already (a resync)
	}
	w.refused[ref] = version
	metrics.PolicyImportErrors.WithLabelValues(tables.PolicySourceK8s).Inc()
	kept := w.hasRules(ref)
	w.log.Warn("Policy refused", "object", ref.String(), "error", err, "previous_version_kept", kept)
	w.status.Error(resource, err)
	if ro, ok := obj.(runtime.Object); ok {
		w.recorder.Event(ro, corev1.EventTypeWarning, ReasonRefused, RefusalMessage(err, kept))
	}
	return ref, nil, false
}

// hasRules reports whether the repository holds rules of the object from
// the cluster (an accepted earlier version).
func (w *watcher) hasRules(ref api.ObjectRef) bool {
	for row := range w.rules.All(w.db.ReadTxn()) {
		if row.Source == tables.PolicySourceK8s && ref.Owns(row.Labels) {
			return true
		}
	}
	return false
}

// maxMessage bounds an event's message (the API server refuses more than
// 1 KiB).
const maxMessage = 1000

// RefusalMessage is the message of the Warning event on a refused policy:
// the parser's error (object and field) and what the agent enforces.
func RefusalMessage(err error, kept bool) string {
	msg := "not enforced: " + err.Error()
	if kept {
		msg += "; the previously accepted version stays enforced"
	} else {
		msg += "; no version of it is enforced"
	}
	if len(msg) > maxMessage {
		msg = strings.ToValidUTF8(msg[:maxMessage-3], "") + "..."
	}
	return msg
}
