package endpoints

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/cilium/statedb"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// statusRow is this cell's row in the k8s-status table: OK while every
// write succeeds, with the number of this node's CEPs and of the writes
// so far (what they cost the API server), LastError the last refused or
// failed one.
const statusRow = "ciliumendpoints"

// writer is the reconciler's target: the API server. It writes a CEP only
// when the object there differs from the row, and remembers the objects
// it wrote or listed (known), so a pod start costs one create and a
// change one update, with no read before either.
type writer struct {
	cs         *client.Clientset
	registered *crds.Registered
	status     *k8scell.Status
	log        *slog.Logger

	mu sync.Mutex
	// known holds this node's CEPs as the API server last returned them
	// (writes, the lists of Prune), by namespace/name. One that is not
	// there is created; if it exists after all, it is read and updated.
	known map[string]*v2.CiliumEndpoint
	// listed is set by the first list: until then known says nothing.
	listed bool
	// writes counts the creates, updates and deletes that succeeded.
	writes uint64
	// pruneFailures counts the failed Prunes in a row (retry backoff).
	pruneFailures int
	retryPrune    func()
}

func newWriter(cs *client.Clientset, registered *crds.Registered, status *k8scell.Status, log *slog.Logger) *writer {
	return &writer{cs: cs, registered: registered, status: status, log: log, known: map[string]*v2.CiliumEndpoint{}}
}

var errNoCRDs = errors.New("the CiliumEndpoint CRD is not registered yet")

func (w *writer) ready() error {
	select {
	case <-w.registered.Done():
		return nil
	default:
		return errNoCRDs
	}
}

// report records the outcome of a write in the k8s-status table.
func (w *writer) report(wrote bool, err error) {
	w.mu.Lock()
	if wrote {
		w.writes++
	}
	detail := fmt.Sprintf("%d of node %s, %d writes", len(w.known), w.cs.NodeName, w.writes)
	w.mu.Unlock()
	w.status.Written(statusRow, detail, err)
}

func (w *writer) get(key string) (*v2.CiliumEndpoint, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	o, ok := w.known[key]
	return o, ok
}

func (w *writer) remember(key string, o *v2.CiliumEndpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o == nil {
		delete(w.known, key)
	} else {
		w.known[key] = o
	}
}

// Update makes the API server's CEP say what row says: a create if it
// has none, an update (conditional on the resourceVersion read) if it
// differs, nothing if it is the same. An update also repairs a CEP owned
// by an earlier pod of the same name.
func (w *writer) Update(ctx context.Context, _ statedb.ReadTxn, _ statedb.Revision, row *tables.CiliumEndpoint) error {
	err := w.write(ctx, row)
	if err != nil {
		err = fmt.Errorf("CiliumEndpoint %s: %w", row.Key(), err)
		w.report(false, err)
	}
	return err
}

func (w *writer) write(ctx context.Context, row *tables.CiliumEndpoint) error {
	if err := w.ready(); err != nil {
		return err
	}
	if err := w.ensureListed(ctx); err != nil {
		return err
	}
	api := w.cs.CiliumV2.CiliumEndpoints(row.Namespace)
	want := object(row, w.cs.NodeName)
	key := row.Key()
	have, ok := w.get(key)
	for attempt := 0; ; attempt++ {
		if !ok {
			created, err := api.Create(ctx, want, metav1.CreateOptions{})
			if err == nil {
				w.remember(key, created)
				w.report(true, nil)
				return nil
			}
			if !k8serrors.IsAlreadyExists(err) {
				return fmt.Errorf("create: %w", err)
			}
			// Left by an earlier run whose list we have not seen, or by
			// a pod of the same name: read it and update it below.
			if have, err = api.Get(ctx, row.Name, metav1.GetOptions{}); err != nil {
				return fmt.Errorf("read: %w", err)
			}
			ok = true
		}
		if upToDate(have, want) {
			w.remember(key, have)
			return nil
		}
		updated, err := api.Update(ctx, merge(have, want), metav1.UpdateOptions{})
		switch {
		case err == nil:
			w.remember(key, updated)
			w.report(true, nil)
			return nil
		case k8serrors.IsNotFound(err):
			ok = false // deleted behind our back: create it
		case k8serrors.IsConflict(err) && attempt < 3:
			// Written since we read it: read it again.
			have, err = api.Get(ctx, row.Name, metav1.GetOptions{})
			switch {
			case k8serrors.IsNotFound(err):
				ok = false
			case err != nil:
				w.remember(key, nil)
				return fmt.Errorf("read: %w", err)
			}
		default:
			w.remember(key, nil)
			return fmt.Errorf("update: %w", err)
		}
		if attempt >= 3 {
			w.remember(key, nil)
			return fmt.Errorf("still changing under the agent's writes after %d attempts", attempt+1)
		}
	}
}

// Delete deletes the CEP of a row no endpoint explains any more (CNI DEL,
// the pod deleted). Only a CEP this node wrote is deleted, and only that
// very object (UID and resourceVersion preconditions): a pod of the same
// name may have been started on another node meanwhile, and its CEP is
// that node's.
func (w *writer) Delete(ctx context.Context, _ statedb.ReadTxn, _ statedb.Revision, row *tables.CiliumEndpoint) error {
	if err := w.ready(); err != nil {
		return err
	}
	if err := w.ensureListed(ctx); err != nil {
		w.report(false, err)
		return err
	}
	key := row.Key()
	have, ok := w.get(key)
	api := w.cs.CiliumV2.CiliumEndpoints(row.Namespace)
	if !ok {
		o, err := api.Get(ctx, row.Name, metav1.GetOptions{})
		switch {
		case k8serrors.IsNotFound(err):
			return nil
		case err != nil:
			err = fmt.Errorf("CiliumEndpoint %s: read: %w", key, err)
			w.report(false, err)
			return err
		}
		have = o
	}
	if err := w.delete(ctx, have); err != nil {
		w.report(false, err)
		return err
	}
	return nil
}

// delete deletes o if it is this node's, on condition that it is still
// that very object as the agent last saw it (its UID and
// resourceVersion): another node may have taken it over for a pod of the
// same name (its create found ours and updated it). On a conflict it
// reads the object again and decides again.
func (w *writer) delete(ctx context.Context, o *v2.CiliumEndpoint) error {
	key := o.Namespace + "/" + o.Name
	api := w.cs.CiliumV2.CiliumEndpoints(o.Namespace)
	for attempt := 0; ; attempt++ {
		if o.Labels[NodeLabel] != w.cs.NodeName {
			w.remember(key, nil)
			return nil
		}
		uid, rv := o.UID, o.ResourceVersion
		err := api.Delete(ctx, o.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case err == nil:
			w.remember(key, nil)
			w.report(true, nil)
			return nil
		case k8serrors.IsNotFound(err):
			w.remember(key, nil)
			return nil
		case k8serrors.IsConflict(err) && attempt < 3:
			if o, err = api.Get(ctx, o.Name, metav1.GetOptions{}); k8serrors.IsNotFound(err) {
				w.remember(key, nil)
				return nil
			} else if err != nil {
				return fmt.Errorf("CiliumEndpoint %s: read: %w", key, err)
			}
		default:
			return fmt.Errorf("CiliumEndpoint %s: delete: %w", key, err)
		}
	}
}

// Prune is the full reconciliation, run once the desired rows are
// complete (endpoints restored, this node's pods listed), then
// periodically and whenever the API server comes back: it lists this
// node's CEPs (by NodeLabel), deletes those no row explains, and writes
// those that are missing or differ (an owner UID of an earlier pod of the
// same name included).
//
// The reconciler does not retry a failed Prune before its next interval;
// the writer asks for one itself, with backoff.
func (w *writer) Prune(ctx context.Context, _ statedb.ReadTxn, rows iter.Seq2[*tables.CiliumEndpoint, statedb.Revision]) error {
	err := w.prune(ctx, rows)
	if err != nil {
		w.report(false, err)
		w.pruneFailures++
		if w.retryPrune != nil {
			time.AfterFunc(pruneBackoff(w.pruneFailures), w.retryPrune)
		}
	} else {
		w.pruneFailures = 0
	}
	return err
}

// pruneBackoff is the wait before the n-th retry of a failed Prune.
func pruneBackoff(n int) time.Duration {
	d := time.Second << min(n-1, 6)
	return min(d, time.Minute)
}

// list reads this node's CEPs (by NodeLabel) into known.
func (w *writer) list(ctx context.Context) (map[string]*v2.CiliumEndpoint, error) {
	list, err := w.cs.CiliumV2.CiliumEndpoints("").List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{NodeLabel: w.cs.NodeName}).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("listing the CiliumEndpoints of node %s: %w", w.cs.NodeName, err)
	}
	have := make(map[string]*v2.CiliumEndpoint, len(list.Items))
	for i := range list.Items {
		o := &list.Items[i]
		have[o.Namespace+"/"+o.Name] = o
	}
	w.mu.Lock()
	w.known, w.listed = have, true
	w.mu.Unlock()
	return have, nil
}

// ensureListed lists this node's CEPs once before the first write, so
// after a restart the agent updates or leaves alone the CEPs it wrote
// before (one list) rather than trying to create each again.
func (w *writer) ensureListed(ctx context.Context) error {
	w.mu.Lock()
	listed := w.listed
	w.mu.Unlock()
	if listed {
		return nil
	}
	_, err := w.list(ctx)
	return err
}

func (w *writer) prune(ctx context.Context, rows iter.Seq2[*tables.CiliumEndpoint, statedb.Revision]) error {
	if err := w.ready(); err != nil {
		return err
	}
	have, err := w.list(ctx)
	if err != nil {
		return err
	}

	want := map[string]*tables.CiliumEndpoint{}
	for row := range rows {
		want[row.Key()] = row
	}
	var errs []error
	for key, o := range have {
		if _, ok := want[key]; !ok {
			w.log.Info("Deleting a CiliumEndpoint no local endpoint explains", "cep", key, "uid", o.UID)
			errs = append(errs, w.delete(ctx, o))
		}
	}
	for _, row := range want {
		if o, ok := have[row.Key()]; ok && upToDate(o, object(row, w.cs.NodeName)) {
			continue
		}
		if err := w.write(ctx, row); err != nil {
			errs = append(errs, fmt.Errorf("CiliumEndpoint %s: %w", row.Key(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	w.report(false, nil)
	return nil
}
