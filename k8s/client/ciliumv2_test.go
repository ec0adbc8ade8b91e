package client_test

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-net/membrane/internal/kubetest"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
)

// The typed cilium.io/v2 client against a real API server: create, get,
// list, a second create of the same name refused, delete.
func TestCiliumV2Client(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real API server: skipped with -short")
	}
	c := kubetest.Start(t)
	c.Kubectl(t, "apply", "-f", "../../install/kubernetes/crds/")
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumidentities.cilium.io", "crd/ciliumendpoints.cilium.io")
	cs, err := client.New(c.Kubeconfig(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if !cs.IsEnabled() || cs.NodeName != "node-1" {
		t.Fatalf("clientset: enabled %v, node %q", cs.IsEnabled(), cs.NodeName)
	}
	ctx := context.Background()
	ids := cs.CiliumV2.CiliumIdentities()
	want := &v2.CiliumIdentity{
		ObjectMeta:     metav1.ObjectMeta{Name: "4242"},
		SecurityLabels: map[string]string{"k8s:app": "web"},
	}
	created, err := ids.Create(ctx, want, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := ids.Create(ctx, want, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: want AlreadyExists, got %v", err)
	}
	got, err := ids.Get(ctx, "4242", metav1.GetOptions{})
	if err != nil || got.SecurityLabels["k8s:app"] != "web" || got.UID != created.UID {
		t.Fatalf("get: %+v, %v", got, err)
	}
	list, err := ids.List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := ids.Delete(ctx, "4242", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &created.UID}}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	c.Kubectl(t, "create", "namespace", "web")
	ceps := cs.CiliumV2.CiliumEndpoints("web")
	if _, err := ceps.Create(ctx, &v2.CiliumEndpoint{ObjectMeta: metav1.ObjectMeta{Name: "web-0"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create endpoint: %v", err)
	}
	if all, err := cs.CiliumV2.CiliumEndpoints("").List(ctx, metav1.ListOptions{}); err != nil || len(all.Items) != 1 || all.Items[0].Namespace != "web" {
		t.Fatalf("list endpoints in all namespaces: %+v, %v", all, err)
	}
}

// Without a kubeconfig and outside a pod the clientset is disabled.
func TestDisabledWithoutConfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cs, err := client.New("", "")
	if err != nil || cs.IsEnabled() {
		t.Fatalf("New: enabled %v, %v", cs.IsEnabled(), err)
	}
}
