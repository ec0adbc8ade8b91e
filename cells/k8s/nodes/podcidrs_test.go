package nodes

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/k8s/client"
)

func testSource(t *testing.T, objs ...*corev1.Node) (*nodePodCIDRs, *fake.Clientset) {
	t.Helper()
	fc := fake.NewClientset()
	for _, o := range objs {
		fc.Tracker().Add(o)
	}
	cs := &client.Clientset{Interface: fc, NodeName: "n1"}
	s, err := newNodePodCIDRs(cs, ipam.Config{IPAM: ipam.ModeKubernetes}, hivetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.poll, s.tell, s.wait = 10*time.Millisecond, 50*time.Millisecond, time.Minute
	return s, fc
}

// The Node appears without CIDRs, then gets them: the wait ends with them,
// and the announcer's view has them as prefixes.
func TestNodePodCIDRsWait(t *testing.T) {
	s, fc := testSource(t)
	go func() {
		time.Sleep(100 * time.Millisecond)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
		fc.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
		time.Sleep(100 * time.Millisecond)
		n.Spec.PodCIDRs = []string{"10.7.0.0/24", "fd00:7::/64"}
		fc.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
	}()
	what, cidrs, err := s.PodCIDRs(t.Context())
	if err != nil || what != "spec.podCIDRs of Node n1" || !slices.Equal(cidrs, []string{"10.7.0.0/24", "fd00:7::/64"}) {
		t.Fatalf("PodCIDRs: %q %v %v", what, cidrs, err)
	}
	ps, ok := s.prefixes(t.Context())
	if !ok || len(ps) != 2 || ps[0].String() != "10.7.0.0/24" || ps[1].String() != "fd00:7::/64" {
		t.Fatalf("prefixes: %v %v", ps, ok)
	}
	// Asked again: the same, without reading the Node again.
	if _, again, err := s.PodCIDRs(t.Context()); err != nil || !slices.Equal(again, cidrs) {
		t.Fatalf("second call: %v %v", again, err)
	}
}

// An older controller sets only spec.podCIDR.
func TestNodePodCIDRSingular(t *testing.T) {
	s, _ := testSource(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.8.0.0/24"}})
	if _, cidrs, err := s.PodCIDRs(t.Context()); err != nil || !slices.Equal(cidrs, []string{"10.8.0.0/24"}) {
		t.Fatalf("PodCIDRs: %v %v", cidrs, err)
	}
}

// No CIDRs within the bound: an error that says what to do; the
// announcer's wait ends with its context.
func TestNodePodCIDRsTimeout(t *testing.T) {
	s, _ := testSource(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	s.wait = 200 * time.Millisecond
	_, _, err := s.PodCIDRs(t.Context())
	if err == nil {
		t.Fatal("no error without spec.podCIDRs")
	}
	for _, w := range []string{"--ipam=kubernetes", "has no spec.podCIDRs", "--allocate-node-cidrs", "kubectl patch node n1", "--ipam=local"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, ok := s.prefixes(ctx); ok {
		t.Error("prefixes without CIDRs")
	}
}

func TestNodePodCIDRsModes(t *testing.T) {
	cs := &client.Clientset{Interface: fake.NewClientset(), NodeName: "n1"}
	if s, err := newNodePodCIDRs(cs, ipam.Config{IPAM: ipam.ModeLocal}, hivetest.Logger(t)); s != nil || err != nil || source(s) != nil {
		t.Fatalf("--ipam=local: %v %v", s, err)
	}
	_, err := newNodePodCIDRs(&client.Clientset{}, ipam.Config{IPAM: ipam.ModeKubernetes}, hivetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "Kubernetes mode") || !strings.Contains(err.Error(), "--k8s-kubeconfig") {
		t.Fatalf("--ipam=kubernetes without Kubernetes mode: %v", err)
	}
}
