package crds_test

import (
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/kubetest"
)

// The CRDs as kubectl users meet them, on a real API server: they install
// with `kubectl apply -f install/kubernetes/crds/`, objects shaped like
// the ones the agent writes are accepted, and `kubectl get` prints
// Cilium's columns with the right values.
func TestCRDsOnAnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real API server: skipped with -short")
	}
	c := kubetest.Start(t)
	c.Kubectl(t, "apply", "-f", ".")
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/ciliumendpoints.cilium.io", "crd/ciliumidentities.cilium.io", "crd/ciliumnodes.cilium.io",
		"crd/ciliumnetworkpolicies.cilium.io", "crd/ciliumclusterwidenetworkpolicies.cilium.io")
	c.Apply(t, `
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {namespace: kube-system, name: coredns-1}
status:
  id: 1648
  identity: {id: 27084, labels: ["k8s:k8s-app=kube-dns", "k8s:io.kubernetes.pod.namespace=kube-system"]}
  networking:
    addressing: [{ipv4: 10.1.2.194}]
    node: node-1
  state: ready
  policy:
    ingress: {enforcing: false, state: non-enforcing}
    egress: {enforcing: true, state: enforcing}
---
apiVersion: cilium.io/v2
kind: CiliumIdentity
metadata:
  name: "27084"
  labels: {k8s-app: kube-dns, io.kubernetes.pod.namespace: kube-system}
security-labels:
  k8s:k8s-app: kube-dns
  k8s:io.kubernetes.pod.namespace: kube-system
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {namespace: kube-system, name: dns}
spec:
  endpointSelector: {matchLabels: {k8s-app: kube-dns}}
  ingress: [{fromEndpoints: [{}], toPorts: [{ports: [{port: "53", protocol: UDP}]}]}]
`)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", "cep", "-A"}, []string{
			"NAMESPACE", "NAME", "ENDPOINT ID", "IDENTITY ID", "INGRESS ENFORCEMENT", "EGRESS ENFORCEMENT", "VISIBILITY POLICY", "ENDPOINT STATE", "IPV4", "IPV6",
			"kube-system", "coredns-1", "1648", "27084", "non-enforcing", "enforcing", "ready", "10.1.2.194",
		}},
		{[]string{"get", "ciliumid"}, []string{"NAME", "NAMESPACE", "AGE", "27084", "kube-system"}},
		{[]string{"get", "cnp", "-n", "kube-system"}, []string{"dns"}},
	} {
		out := c.Kubectl(t, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl %s: no %q in\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}
	// The rule body is kept as written (the agent, not the schema, judges it).
	if out := c.Kubectl(t, "get", "cnp", "-n", "kube-system", "dns", "-o", "jsonpath={.spec.ingress[0].toPorts[0].ports[0].port}"); out != "53" {
		t.Errorf("the stored rule lost its port: %q", out)
	}
}
