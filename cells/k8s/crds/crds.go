// Package crds registers the cilium.io/v2 CustomResourceDefinitions
// (install/kubernetes/crds) with the API server when the agent starts in
// Kubernetes mode: created when missing, updated when they differ, left
// alone when they are the same, so any number of agents may start at once.
// The group's cells that read or write cilium.io objects wait for
// Registered.
//
// Registration retries with backoff while the API server is unreachable;
// the agent serves its pods meanwhile.
package crds

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/membrane-net/membrane/install/kubernetes/crds"
	"github.com/membrane-net/membrane/k8s/client"
)

// Cell provides *Registered and registers the CRDs in Kubernetes mode.
var Cell = cell.Module(
	"k8s-crds",
	"CustomResourceDefinitions of the cilium group",
	cell.Provide(newRegistered),
	cell.Invoke(register),
)

// Registered is closed once every CRD is established.
type Registered struct{ done chan struct{} }

func newRegistered() *Registered { return &Registered{done: make(chan struct{})} }

// Done is closed once the CRDs are established.
func (r *Registered) Done() <-chan struct{} { return r.done }

// establishTimeout bounds the wait for one CRD to be served.
const establishTimeout = time.Minute

func register(cs *client.Clientset, jobs job.Group, log *slog.Logger, r *Registered) error {
	if !cs.IsEnabled() {
		return nil
	}
	want, err := crds.CustomResourceDefinitions()
	if err != nil {
		return err
	}
	jobs.Add(job.OneShot("register-crds", func(ctx context.Context, health cell.Health) error {
		for _, crd := range want {
			if err := ensure(ctx, cs, crd); err != nil {
				health.Degraded("registering CRDs", err)
				return err
			}
		}
		log.Info("CRDs registered", "count", len(want))
		health.OK(fmt.Sprintf("%d CRDs established", len(want)))
		close(r.done)
		return nil
	}, job.WithRetry(-1, &job.ExponentialBackoff{Min: 500 * time.Millisecond, Max: 30 * time.Second})))
	return nil
}

// ensure creates or updates one CRD and waits until it is established.
func ensure(ctx context.Context, cs *client.Clientset, want *apiextensionsv1.CustomResourceDefinition) error {
	api := cs.APIExtensions.ApiextensionsV1().CustomResourceDefinitions()
	have, err := api.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case k8serrors.IsNotFound(err):
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !k8serrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("reading CRD %s: %w", want.Name, err)
	case !reflect.DeepEqual(have.Spec, want.Spec) || !reflect.DeepEqual(have.Labels, want.Labels):
		// The API server defaults a few fields, so a spec read back can
		// differ from ours while being the same; updating it then
		// changes nothing stored (the API server skips no-op writes).
		upd := have.DeepCopy()
		upd.Spec, upd.Labels = want.Spec, want.Labels
		if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating CRD %s: %w", want.Name, err)
		}
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, establishTimeout, true, func(ctx context.Context) (bool, error) {
		crd, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}
