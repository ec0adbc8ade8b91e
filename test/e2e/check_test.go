package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// CHECK notices what breaks a pod after ADD: a route removed inside the
// pod, an endpoint the agent no longer has. DEL still cleans up after
// the endpoint was deleted behind the runtime's back.
func TestCheckDetectsDamage(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	a.putPod("shop", "web", map[string]string{"app": "web"})
	p := newPod(t, "shop", "web")
	if err := n.add(p); err != nil {
		t.Fatal(err)
	}
	if err := n.check(p); err != nil {
		t.Fatal(err)
	}
	gw := p.Result.IPs[0].Gateway.String()

	if out, err := exec.Command("ip", "-n", p.NetnsName, "route", "del", "default").CombinedOutput(); err != nil {
		t.Fatalf("ip route del default: %v: %s", err, out)
	}
	err := n.check(p)
	if want := fmt.Sprintf("route 0.0.0.0/0 via %s is missing on eth0", gw); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CHECK without the default route: %v, want %q", err, want)
	}
	if out, err := exec.Command("ip", "-n", p.NetnsName, "route", "add", "default", "via", gw, "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("restoring the default route: %v: %s", err, out)
	}
	if err := n.check(p); err != nil {
		t.Fatalf("CHECK with the route restored: %v", err)
	}

	ep := a.endpoint(p.Attachment())
	if out, err := exec.Command(bins.CLI, "--socket", a.Socket, "endpoint", "delete", fmt.Sprint(ep.ID)).CombinedOutput(); err != nil {
		t.Fatalf("membrane endpoint delete %d: %v: %s", ep.ID, err, out)
	}
	if err := n.check(p); err == nil || !strings.Contains(err.Error(), "the agent has no endpoint for this attachment") {
		t.Errorf("CHECK after the endpoint was deleted: %v", err)
	}
	if err := n.del(p); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, p, p.IP())
}

// What containerd sends besides the plugin's own keys: declared
// capabilities with runtimeConfig values (capitalised keys), and CNI_ARGS
// in its own order with keys the plugin does not read.
func TestContainerdStyleInput(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", map[string]any{
		"mtu":          1450,
		"capabilities": map[string]bool{"portMappings": true, "io.kubernetes.cri.pod-annotations": true},
	})
	n.CapArgs = `{"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}],` +
		`"io.kubernetes.cri.pod-annotations":{"kubernetes.io/config.source":"api"}}`
	a.putPod("kube-system", "coredns", map[string]string{"k8s-app": "kube-dns"})
	p := newPod(t, "kube-system", "coredns")
	args := fmt.Sprintf("K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=5f1e;IgnoreUnknown=1;K8S_POD_NAME=coredns;K8S_POD_NAMESPACE=kube-system", p.ContainerID)
	if err := n.addWithArgs(p, args); err != nil {
		t.Fatal(err)
	}
	ep := a.endpoint(p.Attachment())
	if ep.K8sUID != "5f1e" || ep.K8sNamespace != "kube-system" || ep.K8sPodName != "coredns" {
		t.Errorf("endpoint pod reference: %s/%s uid %q", ep.K8sNamespace, ep.K8sPodName, ep.K8sUID)
	}
	out, _ := exec.Command("ip", "-n", p.NetnsName, "link", "show", "eth0").CombinedOutput()
	if !strings.Contains(string(out), "mtu 1450") {
		t.Errorf("eth0 in the pod: %s, want mtu 1450", out)
	}
	if err := n.check(p); err != nil {
		t.Error(err)
	}
	if err := n.del(p); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, p, p.IP())
}
