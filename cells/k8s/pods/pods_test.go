package pods

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodRowCarriesNamespaceLabelsAndServiceAccount(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"team": "a", "kubernetes.io/metadata.name": "prod"}}}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-0", UID: "u1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "web-sa"},
	}
	row, err := PodRow(p, ns)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"app":                                 "web",
		"io.cilium.k8s.namespace.labels.team": "a",
		"io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "prod",
		"io.cilium.k8s.policy.serviceaccount":                        "web-sa",
	}
	if !maps.Equal(row.Labels, want) || row.Namespace != "prod" || row.Name != "web-0" || row.UID != "u1" || row.Source != Source {
		t.Errorf("row = %+v, want labels %v", row, want)
	}
	// The pod's own map is not changed.
	if len(p.Labels) != 1 {
		t.Errorf("pod labels changed: %v", p.Labels)
	}
}

func TestPodRowRefusesWhatTheAgentCannotCarry(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-0", Labels: map[string]string{"bad key": "x"}}}
	if _, err := PodRow(p, ns); err == nil || !strings.Contains(err.Error(), "bad key") {
		t.Errorf("err = %v, want one naming the label", err)
	}
}
