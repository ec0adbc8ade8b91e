package nodes

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Reasons of the Warning events on a CiliumNode this agent refuses to
// route: its pod CIDRs overlap another node's; it does not parse.
const (
	ReasonOverlap = "PodCIDROverlap"
	ReasonInvalid = "InvalidCiliumNode"
)

// resync re-delivers every cached object now and then.
const resync = 10 * time.Minute

// watcher writes the nodes table from the CiliumNode informer.
type watcher struct {
	cs         *client.Clientset
	registered *crds.Registered
	status     *k8scell.Status
	log        *slog.Logger
	db         *statedb.DB
	nodes      statedb.RWTable[*tables.Node]
	initDone   func(statedb.WriteTxn)
	kick       chan struct{} // to the announcer: this node's object changed

	mu       sync.Mutex // serialises sync
	store    cache.Store
	synced   bool
	recorder record.EventRecorder
	refused  map[string]string // node -> the refusal last reported
}

func (w *watcher) run(ctx context.Context, health cell.Health) error {
	select {
	case <-w.registered.Done():
	case <-ctx.Done():
		return nil
	}
	rec, stopEvents, err := k8scell.NewRecorder(ctx, w.cs)
	if err != nil {
		return err
	}
	defer stopEvents()
	w.recorder = rec

	api := w.cs.CiliumV2.CiliumNodes()
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return api.List(ctx, o)
		},
		WatchFuncWithContext: api.Watch,
	}, &v2.CiliumNode{}, resync, cache.Indexers{})
	w.store = inf.GetStore()
	changed := func(obj any) {
		w.status.Event(Resource)
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if n, ok := obj.(*v2.CiliumNode); ok && n.Name == w.cs.NodeName {
			select {
			case w.kick <- struct{}{}:
			default:
			}
		}
		w.sync()
	}
	handler, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj) },
		DeleteFunc: changed,
	})
	if err != nil {
		return err
	}
	if err := inf.SetWatchErrorHandlerWithContext(w.status.WatchErrors(Resource, w.log)); err != nil {
		return err
	}
	w.status.Cache(Resource, false, "")
	health.OK("waiting for the CiliumNodes from " + w.cs.Server)
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, handler.HasSynced) {
		return nil
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	w.sync()
	w.status.Cache(Resource, true, "every CiliumNode")
	w.log.Info("CiliumNodes synced from the API server", "server", w.cs.Server)
	health.OK("synced: CiliumNodes")
	<-ctx.Done()
	return nil
}

// sync makes the table what the cache holds, in one transaction. Before
// the first list is complete it writes nothing: a partial list would
// delete rows (and so routes) that are only not listed yet.
func (w *watcher) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.synced {
		return
	}
	var objs []*v2.CiliumNode
	for _, o := range w.store.List() {
		if n, ok := o.(*v2.CiliumNode); ok {
			objs = append(objs, n)
		}
	}
	byName := map[string]*v2.CiliumNode{}
	for _, o := range objs {
		byName[o.Name] = o
	}
	rows := Rows(objs, w.cs.NodeName)

	now := time.Now()
	wtxn := w.db.WriteTxn(w.nodes)
	defer wtxn.Abort()
	want := map[string]bool{}
	for _, row := range rows {
		want[row.Name] = true
		w.report(byName[row.Name], row.Refused)
		old, _, found := w.nodes.Get(wtxn, tables.NodeNameIndex.Query(row.Name))
		if found && old.SameSpec(row) {
			continue
		}
		row.UpdatedAt, row.RouteStatus = now, reconciler.StatusPending()
		w.nodes.Insert(wtxn, row)
	}
	for old := range w.nodes.All(wtxn) {
		if !want[old.Name] {
			w.nodes.Delete(wtxn, old)
			delete(w.refused, old.Name)
		}
	}
	if w.initDone != nil {
		w.initDone(wtxn)
		w.initDone = nil
	}
	wtxn.Commit()
}

// report logs and records a refusal once, when it first appears or
// changes; a refusal lifted is logged too.
func (w *watcher) report(obj *v2.CiliumNode, refused string) {
	if w.refused[obj.Name] == refused {
		return
	}
	if refused == "" {
		w.log.Info("CiliumNode no longer refused: its pod CIDRs are routed", "node", obj.Name)
		delete(w.refused, obj.Name)
		return
	}
	w.refused[obj.Name] = refused
	w.log.Warn("CiliumNode refused: its pod CIDRs are not routed", "node", obj.Name, "reason", refused)
	if w.recorder != nil {
		reason := ReasonInvalid
		if strings.Contains(refused, " overlaps ") {
			reason = ReasonOverlap
		}
		w.recorder.Event(obj, corev1.EventTypeWarning, reason, fmt.Sprintf("membrane-agent on %s: %s", w.cs.NodeName, refused))
	}
}
