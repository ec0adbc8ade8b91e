package api_test

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/membrane-net/membrane/policy/api"
)

// A NetworkPolicy as the API server's typed client holds it, marshalled
// with its kind and apiVersion set, is what a cluster watcher hands to
// Parse: every field the type writes (metadata included) must be read.
// (Only this test links k8s.io/api; the package itself must not, as the
// CLI links it.)
func TestNetworkPolicyFromTypedObject(t *testing.T) {
	sctp := corev1.ProtocolSCTP
	port, end := intstr.FromInt32(8000), int32(8100)
	np := networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", UID: "u-1", ResourceVersion: "3", Generation: 1,
			CreationTimestamp: metav1.Now(), Labels: map[string]string{"team": "a"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &sctp, Port: &port, EndPort: &end}},
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpExists}}},
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.128/25"}}},
				},
			}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
	doc, err := json.Marshal(&np)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := api.Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, doc)
	}
	r := rules[0].Rule
	r.Labels, r.Description = nil, ""
	got, _ := json.Marshal(r)
	want := `{"endpointSelector":{"matchLabels":{"k8s:app":"web"}},` +
		`"ingress":[{"fromEndpoints":[{"matchLabels":{"k8s:io.cilium.k8s.namespace.labels.env":"prod"},` +
		`"matchExpressions":[{"key":"k8s:role","operator":"Exists"},{"key":"k8s:io.kubernetes.pod.namespace","operator":"Exists"}]}],` +
		`"fromCIDRSet":[{"cidr":"192.0.2.0/24","except":["192.0.2.128/25"]}],"toPorts":[{"ports":[{"port":"8000","endPort":8100,"protocol":"SCTP"}]}]}],` +
		`"egress":[{}]}`
	if string(got) != want {
		t.Errorf("rule\n got %s\nwant %s", got, want)
	}
	if rules[0].Object.String() != `NetworkPolicy "prod/web"` || rules[0].Namespace != "prod" {
		t.Errorf("object %v, namespace %q", rules[0].Object, rules[0].Namespace)
	}
}
