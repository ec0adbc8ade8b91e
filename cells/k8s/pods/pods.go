// Package pods fills the pods table from the cluster: the Pod objects
// scheduled on this node (a field selector on spec.nodeName) and every
// Namespace. A row carries what the endpoint manager turns into an
// endpoint's k8s: labels, as Cilium derives them:
//
//	pod labels                   KEY=VALUE
//	namespace labels             io.cilium.k8s.namespace.labels.KEY=VALUE
//	the pod's service account    io.cilium.k8s.policy.serviceaccount=NAME
//
// (the namespace itself, io.kubernetes.pod.namespace, is added by the
// endpoint manager for every source). The security-label filter then
// decides which of them make the identity. `kubectl label pod` rewrites
// the pod's row; `kubectl label namespace` rewrites the rows of all its
// pods; the endpoints follow through the pod labels controller.
//
// A pod is written only once its namespace is known, so no endpoint ever
// takes an identity without its namespace's labels. An endpoint whose pod
// is not in the cache yet waits, as for any source
// (--pod-metadata-timeout).
//
// Reads: the API server (list and watch). Writes: pods (source "k8s").
// Try it: kubectl label pod NAME k=v; membrane statedb pods.
package pods

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/k8s/client"
	mblabels "github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Source marks the rows this cell owns.
const Source = "k8s"

// Label keys Cilium derives from a pod's namespace and service account.
const (
	NamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
	ServiceAccountKey    = "io.cilium.k8s.policy.serviceaccount"
)

// Cell watches pods and namespaces when the agent runs in Kubernetes mode.
var Cell = cell.Module(
	"k8s-pods",
	"Pods and namespaces from the Kubernetes API server",
	cell.Invoke(register),
)

// resync re-delivers every cached object now and then, so a row that a
// failed write left stale converges without an event.
const resync = 10 * time.Minute

func register(cs *client.Clientset, status *k8scell.Status, jobs job.Group, log *slog.Logger, db *statedb.DB, pods statedb.RWTable[*tables.Pod]) {
	if !cs.IsEnabled() {
		return
	}
	w := &watcher{cs: cs, status: status, log: log, db: db, pods: pods}
	jobs.Add(job.OneShot("watch-pods", w.run))
}

type watcher struct {
	cs     *client.Clientset
	status *k8scell.Status
	log    *slog.Logger
	db     *statedb.DB
	pods   statedb.RWTable[*tables.Pod]

	nsIndexer  cache.Indexer // namespaces, by name
	podIndexer cache.Indexer // this node's pods, by namespace/name
}

func (w *watcher) run(ctx context.Context, health cell.Health) error {
	// Namespaces first: a pod is written only with its namespace's labels.
	nsFactory := informers.NewSharedInformerFactory(w.cs, resync)
	nsInformer := nsFactory.Core().V1().Namespaces().Informer()
	w.nsIndexer = nsInformer.GetIndexer()
	podFactory := informers.NewSharedInformerFactoryWithOptions(w.cs, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", w.cs.NodeName).String()
		}))
	podInformer := podFactory.Core().V1().Pods().Informer()
	w.podIndexer = podInformer.GetIndexer()

	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.status.Event("namespaces"); w.namespaceChanged(obj) },
		UpdateFunc: func(_, obj any) { w.status.Event("namespaces"); w.namespaceChanged(obj) },
		DeleteFunc: func(obj any) { w.status.Event("namespaces"); w.namespaceChanged(obj) },
	}); err != nil {
		return err
	}
	podHandler, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.status.Event("pods"); w.podChanged(obj) },
		UpdateFunc: func(_, obj any) { w.status.Event("pods"); w.podChanged(obj) },
		DeleteFunc: func(obj any) { w.status.Event("pods"); w.podChanged(obj) },
	})
	if err != nil {
		return err
	}

	for name, inf := range map[string]cache.SharedIndexInformer{"namespaces": nsInformer, "pods": podInformer} {
		if err := inf.SetWatchErrorHandlerWithContext(w.status.WatchErrors(name, w.log)); err != nil {
			return err
		}
		w.status.Cache(name, false, "")
	}

	health.OK(fmt.Sprintf("waiting for namespaces from %s", w.cs.Server))
	nsFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.HasSynced) {
		return nil // stopping
	}
	w.status.Cache("namespaces", true, "every namespace")
	health.OK(fmt.Sprintf("waiting for the pods of node %s", w.cs.NodeName))
	podFactory.Start(ctx.Done())
	defer podFactory.Shutdown()
	// Synced once the handler has written the listed pods, not only once
	// the informer holds them: the pods row "synced" tells the
	// CiliumEndpoint cell that every pod of the node is in the table.
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced, podHandler.HasSynced) {
		return nil
	}
	w.status.Cache("pods", true, "pods of node "+w.cs.NodeName)
	w.log.Info("Pods and namespaces synced from the API server", "server", w.cs.Server, "node", w.cs.NodeName)
	health.OK(fmt.Sprintf("synced: pods of node %s, namespaces", w.cs.NodeName))
	<-ctx.Done()
	return nil
}

// podChanged rewrites the row of one pod from the caches.
func (w *watcher) podChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.sync([]string{p.Namespace + "/" + p.Name})
}

// namespaceChanged rewrites the rows of every pod of the namespace.
func (w *watcher) namespaceChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok || w.podIndexer == nil {
		return
	}
	// The pod informer indexes its cache by namespace.
	keys, err := w.podIndexer.IndexKeys(cache.NamespaceIndex, ns.Name)
	if err != nil {
		w.log.Warn("Pods of a relabelled namespace not rewritten", "namespace", ns.Name, "error", err)
		return
	}
	w.sync(keys)
}

// sync makes the rows of the given pods (namespace/name) what the caches
// say, in one write transaction. Both informers call it; as it reads the
// caches, not the event, the last call wins with the newest state.
func (w *watcher) sync(keys []string) {
	if len(keys) == 0 {
		return
	}
	wtxn := w.db.WriteTxn(w.pods)
	defer wtxn.Abort()
	for _, key := range keys {
		old, _, found := w.pods.Get(wtxn, tables.PodKeyIndex.Query(key))
		row, err := w.desired(key)
		switch {
		case err != nil:
			w.log.Warn("Pod not written to the pods table", "pod", key, "error", err)
			continue
		case row == nil:
			if found && old.Source == Source {
				w.pods.Delete(wtxn, old)
			}
			continue
		case found && equalRows(old, row):
			continue
		}
		w.pods.Insert(wtxn, row)
	}
	wtxn.Commit()
}

// desired is the row of a pod, or nil if it has none: the pod is gone
// or its namespace is not known yet.
func (w *watcher) desired(key string) (*tables.Pod, error) {
	obj, exists, err := w.podIndexer.GetByKey(key)
	if err != nil || !exists {
		return nil, err
	}
	p := obj.(*corev1.Pod)
	nsObj, exists, err := w.nsIndexer.GetByKey(p.Namespace)
	if err != nil || !exists {
		return nil, err
	}
	return PodRow(p, nsObj.(*corev1.Namespace))
}

// PodRow is the pods-table row of a Pod in its Namespace: the pod's labels
// with the namespace's labels and the service account added as Cilium
// names them. A label the agent could not carry is an error naming it.
func PodRow(p *corev1.Pod, ns *corev1.Namespace) (*tables.Pod, error) {
	ls := maps.Clone(p.Labels)
	if ls == nil {
		ls = map[string]string{}
	}
	for k, v := range ns.Labels {
		ls[NamespaceLabelPrefix+k] = v
	}
	if sa := p.Spec.ServiceAccountName; sa != "" {
		ls[ServiceAccountKey] = sa
	}
	if err := mblabels.FromMap(ls, mblabels.SourceK8s).Validate(); err != nil {
		return nil, err
	}
	return &tables.Pod{
		Namespace: p.Namespace, Name: p.Name, UID: string(p.UID),
		Labels: ls, Annotations: maps.Clone(p.Annotations), Source: Source,
	}, nil
}

func equalRows(a, b *tables.Pod) bool {
	return a.Source == b.Source && a.UID == b.UID && maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
}
