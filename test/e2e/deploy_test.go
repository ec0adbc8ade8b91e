package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// The deploy manifests of install/kubernetes, on a real API server:
//
//   - the agent, run with the flags of the DaemonSet and ConfigMap and
//     with nothing but the rights of its ServiceAccount, registers the
//     CRDs and takes a pod's labels from the cluster with no request
//     refused (the RBAC is sufficient);
//   - the ServiceAccount is refused what the agent has no use for (the
//     RBAC is least-privilege, in a few visible ways);
//   - every manifest passes the API server's validation and admission
//     (`kubectl apply --dry-run=server`): the DaemonSet cannot run, there
//     is no kubelet.
func TestKubernetesDeployManifests(t *testing.T) {
	setup(t)
	const dir = "../../install/kubernetes"
	const ns, sa, node = "membrane-system", "membrane-agent", "node-1"
	cluster := kubetest.Start(t)

	// The agent's identity: its namespace, ServiceAccount and rights, for
	// real. The token comes first, then the manifests have the last word
	// on the namespace and the ServiceAccount.
	kubeconfig := cluster.ServiceAccountKubeconfig(t, ns, sa)
	cluster.Kubectl(t, "apply", "-f", filepath.Join(dir, "00-namespace.yaml"), "-f", filepath.Join(dir, "10-rbac.yaml"))

	// The agent with the DaemonSet's flags (paths and the pod CIDR are
	// the harness's, so that it runs next to other tests) and the
	// ServiceAccount's token. No CRDs exist yet: it registers them.
	flags := daemonSetFlags(t, dir)
	a := startAgent(t, agentOpts{Extra: append(flags, "--k8s-kubeconfig", kubeconfig, "--node-name", node)})
	e2eutil.Eventually(t, time.Minute, "the agent registers the CRDs", func() error {
		if !strings.Contains(a.Log(1<<20), "CRDs registered") {
			return fmt.Errorf("no \"CRDs registered\" in the agent's log")
		}
		return nil
	})

	// Least privilege, as kubectl shows it (now that the cilium.io
	// resources exist, kubectl can name them).
	as := "--as=system:serviceaccount:" + ns + ":" + sa
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "pods", "-A"}, "yes"},
		{[]string{"watch", "namespaces"}, "yes"},
		{[]string{"create", "ciliumidentities.cilium.io"}, "yes"},
		{[]string{"delete", "ciliumendpoints.cilium.io", "-n", "default"}, "yes"},
		{[]string{"list", "networkpolicies.networking.k8s.io", "-A"}, "yes"},
		{[]string{"update", "customresourcedefinitions.apiextensions.k8s.io/ciliumendpoints.cilium.io"}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io/membrane-identity-gc", "-n", ns}, "yes"},
		{[]string{"list", "secrets", "-A"}, "no"},
		{[]string{"get", "secrets", "-n", ns}, "no"},
		{[]string{"delete", "pods", "-n", "default"}, "no"},
		{[]string{"update", "pods", "-n", "default"}, "no"},
		{[]string{"update", "namespaces"}, "no"},
		{[]string{"get", "nodes"}, "yes"},
		{[]string{"list", "nodes"}, "no"},
		{[]string{"update", "nodes"}, "no"},
		{[]string{"delete", "ciliumnodes.cilium.io"}, "no"},
		{[]string{"update", "ciliumnetworkpolicies.cilium.io", "-n", "default"}, "no"},
		{[]string{"update", "customresourcedefinitions.apiextensions.k8s.io/other.example.com"}, "no"},
		{[]string{"delete", "customresourcedefinitions.apiextensions.k8s.io/ciliumendpoints.cilium.io"}, "no"},
		{[]string{"delete", "leases.coordination.k8s.io/membrane-id-0123", "-n", ns}, "yes"},
		{[]string{"watch", "leases.coordination.k8s.io", "-n", ns}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io/other", "-n", "default"}, "no"},
		{[]string{"list", "leases.coordination.k8s.io", "-A"}, "no"},
		{[]string{"create", "leases.coordination.k8s.io", "-n", "kube-system"}, "no"},
	} {
		// can-i exits 1 for "no": the answer is on stdout either way.
		out, stderr, err := cluster.KubectlErr(append([]string{"auth", "can-i", as}, c.args...)...)
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("kubectl auth can-i %s as the agent: %q, want %q (%v %s)", strings.Join(c.args, " "), got, c.want, err, stderr)
		}
	}

	cluster.Apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {tier: front}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: web-1, labels: {app: web}}
spec:
  nodeName: %s
  serviceAccountName: default
  containers: [{name: c, image: registry.k8s.io/pause:3.10}]
`, node))
	n := newNetwork(t, a, "", nil)
	p := newPod(t, "shop", "web-1")
	addK8sPod(t, cluster, n, p)
	waitIdentity(t, a, p, "k8s:app=web", func(uint32) bool { return true })
	waitIdentity(t, a, p, "k8s:io.cilium.k8s.namespace.labels.tier=front", func(uint32) bool { return true })
	// Its CiliumEndpoint: listed, created, then deleted on DEL.
	cs, err := k8sclient.New(cluster.Kubeconfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	waitCEPMatches(t, cluster, cs, a, p)
	if err := n.del(p); err != nil {
		t.Errorf("DEL shop/web-1: %v", err)
	}
	waitCEPGone(t, cs, "shop", "web-1")
	// The policies cell lists and watches the three policy kinds and
	// writes an event on a policy it refuses.
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumnetworkpolicies.cilium.io")
	cluster.Apply(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: refused, namespace: shop}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoint: [{}]}]
`)
	waitRefused(t, cluster, a, "refused", "spec.ingress[0].fromEndpoint: unknown field")
	if log := a.Log(1 << 20); strings.Contains(strings.ToLower(log), "forbidden") {
		t.Errorf("the agent was refused a request under its ServiceAccount:\n%s", grepLines(log, "forbidden"))
	}

	// Every manifest, through validation and admission. The CRDs for
	// real (as the docs say to apply them first: the agent has made them
	// already, this must change nothing), the rest dry-run.
	cluster.Kubectl(t, "apply", "-f", filepath.Join(dir, "crds"))
	out := cluster.Kubectl(t, "apply", "--dry-run=server", "-f", dir)
	for _, want := range []string{
		"namespace/membrane-system", "serviceaccount/membrane-agent", "clusterrole.rbac.authorization.k8s.io/membrane-agent",
		"clusterrolebinding.rbac.authorization.k8s.io/membrane-agent", "role.rbac.authorization.k8s.io/membrane-agent",
		"rolebinding.rbac.authorization.k8s.io/membrane-agent", "configmap/membrane-config", "daemonset.apps/membrane-agent",
	} {
		if !strings.Contains(out, want+" ") {
			t.Errorf("kubectl apply --dry-run=server -f install/kubernetes/ did not apply %s:\n%s", want, out)
		}
	}
}

// daemonSetFlags returns the agent container's arguments of the
// DaemonSet with the ConfigMap's values expanded as the kubelet expands
// them, without the flags that name the node's paths, address and pod
// CIDR.
func daemonSetFlags(t *testing.T, dir string) []string {
	t.Helper()
	var cm struct {
		Data map[string]string `json:"data"`
	}
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string   `json:"name"`
						Args []string `json:"args"`
						Env  []struct {
							Name      string `json:"name"`
							ValueFrom struct {
								ConfigMapKeyRef struct {
									Key string `json:"key"`
								} `json:"configMapKeyRef"`
							} `json:"valueFrom"`
						} `json:"env"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	for file, v := range map[string]any{"20-config.yaml": &cm, "30-daemonset.yaml": &ds} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	env := map[string]string{}
	var args []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name != "membrane-agent" {
			continue
		}
		for _, e := range c.Env {
			if k := e.ValueFrom.ConfigMapKeyRef.Key; k != "" {
				v, ok := cm.Data[k]
				if !ok {
					t.Fatalf("the DaemonSet reads key %q the ConfigMap does not have", k)
				}
				env[e.Name] = v
			}
		}
		args = c.Args
	}
	if len(args) == 0 {
		t.Fatal("no membrane-agent container with arguments in the DaemonSet")
	}
	ref := regexp.MustCompile(`\$\(([A-Z0-9_]+)\)`)
	var flags []string
	for _, arg := range args {
		name, _, _ := strings.Cut(arg, "=")
		switch name {
		case "--socket", "--state-dir", "--bpf-root", "--pod-cidr", "--pod-cidr-v6", "--node-ip", "--write-cni-conf-when-ready":
			continue
		}
		flags = append(flags, ref.ReplaceAllStringFunc(arg, func(m string) string {
			v, ok := env[ref.FindStringSubmatch(m)[1]]
			if !ok {
				t.Fatalf("argument %q refers to %s, which the DaemonSet does not set from the ConfigMap", arg, m)
			}
			return v
		}))
	}
	return flags
}

// grepLines returns the lines of s that contain sub, case-insensitively.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
