package kubetest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/kubetest"
)

const pod = `apiVersion: v1
kind: Pod
metadata:
  namespace: web
  name: web-1
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
  - name: app
    image: registry.example/app:1
`

const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.membrane.io
spec:
  group: test.membrane.io
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                type: integer
`

const widget = `apiVersion: test.membrane.io/v1
kind: Widget
metadata:
  namespace: web
  name: w1
spec:
  size: 3
`

// The reader ServiceAccount may read Pods in namespace web, nothing else.
const rbac = `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  namespace: web
  name: pod-reader
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  namespace: web
  name: reader-reads-pods
subjects:
- kind: ServiceAccount
  namespace: web
  name: reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
`

func TestCluster(t *testing.T) {
	began := time.Now()
	c := kubetest.Start(t)
	t.Logf("started in %v", time.Since(began).Round(time.Millisecond))

	ns := c.Kubectl(t, "get", "namespaces", "-o", "name")
	for _, want := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(ns, want) {
			t.Errorf("kubectl get namespaces: no %s in\n%s", want, ns)
		}
	}

	// A Pod "scheduled" by the test (no scheduler runs), its status
	// written by the test (no kubelet runs).
	c.Kubectl(t, "create", "namespace", "web")
	c.Apply(t, pod)
	c.Kubectl(t, "patch", "pod", "web-1", "--namespace", "web", "--subresource=status", "--type=merge",
		"-p", `{"status":{"phase":"Running","podIP":"10.200.0.5","podIPs":[{"ip":"10.200.0.5"}]}}`)
	checkPod := func() {
		t.Helper()
		out := c.Kubectl(t, "get", "pods", "--all-namespaces", "--field-selector", "spec.nodeName=node-1",
			"-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.labels.app} {.status.podIP}{"\n"}{end}`)
		if want := "web/web-1 web 10.200.0.5\n"; out != want {
			t.Errorf("pods on node-1: got %q, want %q", out, want)
		}
	}
	checkPod()

	c.Apply(t, crd)
	c.Kubectl(t, "wait", "--for=condition=Established", "crd/widgets.test.membrane.io", "--timeout=60s")
	c.Apply(t, widget)
	checkWidget := func() {
		t.Helper()
		if out := c.Kubectl(t, "get", "widgets", "w1", "--namespace", "web", "-o", "jsonpath={.spec.size}"); out != "3" {
			t.Errorf("widget w1: size %q, want 3", out)
		}
	}
	checkWidget()

	// A ServiceAccount may do nothing until RBAC allows it.
	reader := c.ServiceAccountKubeconfig(t, "web", "reader")
	_, stderr, err := c.KubectlAs(reader, "", "get", "pods", "--namespace", "web")
	if err == nil || !strings.Contains(stderr, "Forbidden") || !strings.Contains(stderr, "system:serviceaccount:web:reader") {
		t.Fatalf("reader lists pods without a Role: err %v, stderr %s", err, stderr)
	}
	c.Apply(t, rbac)
	canRead := func() {
		t.Helper()
		// The RBAC authorizer learns of the binding through a watch:
		// allow it a moment.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, stderr, err := c.KubectlAs(reader, "", "get", "pods", "--namespace", "web", "-o", "name")
			if err == nil {
				if out != "pod/web-1\n" {
					t.Errorf("reader lists pods: %q", out)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("reader cannot list pods with its Role: %v\n%s", err, stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	canRead()
	if _, stderr, err := c.KubectlAs(reader, "", "get", "pods", "--namespace", "default"); err == nil || !strings.Contains(stderr, "Forbidden") {
		t.Errorf("reader lists pods outside its namespace: err %v, stderr %s", err, stderr)
	}

	// Only the API server goes away: etcd keeps the data.
	stopped := time.Now()
	c.StopAPIServer()
	t.Logf("kube-apiserver stopped in %v", time.Since(stopped).Round(time.Millisecond))
	if _, stderr, err := c.KubectlErr("get", "namespaces", "--request-timeout=5s"); err == nil {
		t.Fatal("kubectl works with the API server stopped")
	} else if !strings.Contains(stderr, "refused") {
		t.Errorf("kubectl with the API server stopped: %v\n%s", err, stderr)
	}
	restarted := time.Now()
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restarted in %v", time.Since(restarted).Round(time.Millisecond))
	checkPod()
	checkWidget()
	canRead()
}
