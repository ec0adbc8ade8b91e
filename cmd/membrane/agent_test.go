package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/hivetest"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/internal/testutil"
)

// TestAgentSession drives the CLI against the stock agent (its default
// cells, in this process, on temporary paths) the way an operator would:
// register pods, look at an endpoint the CNI plugin would have created,
// relabel and delete it, and read the pinned maps before and after the
// agent stops. It asserts what the CLI shows of the agent's real answers;
// the agent's own behaviour is tested with its cells and end to end.
func TestAgentSession(t *testing.T) {
	bpfRoot, sock, stop := startAgentInProcess(t)
	m := func(args ...string) []string { return append([]string{"--socket", sock}, args...) }

	out := ok(t, m("status")...)
	if !strings.HasPrefix(out, "Agent:     healthy\n") || !strings.Contains(out, "\nCELL ") || !strings.Contains(out, "\ntotal ") {
		t.Fatalf("status:\n%s", out)
	}

	// Pods from a manifest file.
	wantLines(t, ok(t, m("pod", "apply", "-f", "testdata/pods.yaml")...),
		"pod default/web applied", "pod storage/db applied", "pod default/cache applied")
	var pods []models.Pod
	mustJSON(t, ok(t, m("pod", "list", "-o", "json")...), &pods)
	if len(pods) != 3 || pods[1].Name != "web" || pods[1].Labels["app.kubernetes.io/part-of"] != "shop" || pods[2].UID == "" {
		t.Fatalf("pods %+v", pods)
	}

	// What membrane-cni does for a pod, without a netns: an address, then
	// the endpoint.
	c := client.New(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ip, err := c.AllocateIP(ctx, &models.IPAMRequest{Owner: "c0ffee0123456789:eth0", Pod: "default/web"})
	if err != nil {
		t.Fatal(err)
	}
	// A veth of its own stands in for the host veth: the agent attaches the
	// datapath to it (never to lo, which the rest of the machine uses).
	dummy := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: fmt.Sprintf("mbclp%d", os.Getpid()%100000)}
	dummy.Name = fmt.Sprintf("mbcli%d", os.Getpid()%100000)
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(dummy) })
	created, err := c.PutEndpoint(ctx, "0", &models.EndpointChangeRequest{
		ContainerID: "c0ffee0123456789", ContainerInterfaceName: "eth0", InterfaceName: dummy.Name, InterfaceIndex: int64(dummy.Attrs().Index),
		Addressing: &models.AddressPair{IPv4: ip.IPv4.IP}, K8sNamespace: "default", K8sPodName: "web",
	})
	if err != nil {
		t.Fatal(err)
	}
	id := strconv.Itoa(int(created.ID))

	var eps []models.Endpoint
	mustJSON(t, ok(t, m("endpoint", "list", "-o", "json")...), &eps)
	if len(eps) != 1 || eps[0].ID != created.ID || eps[0].K8sPodName != "web" || eps[0].Addressing.IPv4 != ip.IPv4.IP ||
		!slices.Contains(eps[0].Labels, "k8s:app=web") {
		t.Fatalf("endpoints %+v", eps)
	}
	out = ok(t, m("endpoint", "list")...)
	if !strings.Contains(out, "default/web") || !strings.Contains(out, "c0ffee012345:eth0") {
		t.Fatalf("endpoint list:\n%s", out)
	}
	// Every form of endpoint ID reaches the same endpoint through the real router.
	for _, ref := range []string{id, "pod-name:default/web", "container-id:c0ffee0123456789",
		"cni-attachment-id:c0ffee0123456789:eth0", "ipv4:" + ip.IPv4.IP} {
		if out := ok(t, m("endpoint", "get", ref)...); !strings.HasPrefix(out, "ID:                    "+id+"\n") {
			t.Fatalf("endpoint get %s:\n%s", ref, out)
		}
	}
	if out := ok(t, m("endpoint", "log", id)...); strings.Count(out, "\n") < 2 {
		t.Fatalf("endpoint log:\n%s", out)
	}
	out = ok(t, m("endpoint", "labels", "pod-name:default/web", "--add", "tier=gold")...)
	if !strings.Contains(out, "requested   container:tier=gold\n") || !strings.Contains(out, "pod         k8s:app=web\n") {
		t.Fatalf("endpoint labels:\n%s", out)
	}

	out = ok(t, m("ipam", "list")...)
	if !strings.Contains(out, ip.IPv4.IP) || !strings.Contains(out, "c0ffee0123456789:eth0") {
		t.Fatalf("ipam list:\n%s", out)
	}
	out = ok(t, m("statedb", "endpoints", "--columns", "id,k8s-pod-name")...)
	w := max(len("ID"), len(id)) + 3 // the table's padding is 3
	wantLines(t, out, padRight("ID", w)+"K8S-POD-NAME", padRight(id, w)+"web")
	if out := ok(t, m("statedb")...); !strings.Contains(out, "\nendpoints ") || !strings.Contains(out, "\npods ") {
		t.Fatalf("statedb tables:\n%s", out)
	}

	wantLines(t, ok(t, m("endpoint", "delete", id)...), "endpoint "+id+" deleted")
	wantLines(t, ok(t, m("endpoint", "list", "-o", "json")...), "[]")
	if e := fails(t, m("endpoint", "get", id)...); !strings.Contains(e, "(HTTP 404)") {
		t.Fatalf("stderr %q", e)
	}
	wantLines(t, ok(t, m("pod", "delete", "default/web")...), "pod default/web deleted")

	// The maps outlive the agent; the API does not.
	ok(t, "bpf", "ipcache", "list", "--bpf-root", bpfRoot)
	stop()
	if e := fails(t, m("status")...); !strings.Contains(e, "cannot reach membrane-agent at "+sock) {
		t.Fatalf("stderr %q", e)
	}
	ok(t, "bpf", "ipcache", "list", "--bpf-root", bpfRoot)
	ok(t, "bpf", "endpoint", "list", "--bpf-root", bpfRoot)
}

func padRight(s string, n int) string { return s + strings.Repeat(" ", max(0, n-len(s))) }

// startAgentInProcess runs the stock agent's cells in this process on
// temporary paths; stop (also called at cleanup) stops it once.
func startAgentInProcess(t *testing.T) (bpfRoot, sock string, stop func()) {
	t.Helper()
	bpfRoot = testutil.BPFDir(t) // also the privileged gate
	sock = filepath.Join(tempDirShort(t), "membrane.sock")
	h := cells.NewAgentHive(cells.DefaultCells)
	hive.AddConfigOverride(h, func(c *apiserver.Config) { c.Socket = sock })
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = t.TempDir() })
	hive.AddConfigOverride(h, func(c *loader.Config) { c.BPFRoot = bpfRoot })
	log := hivetest.Logger(t)
	if err := h.Start(log, context.Background()); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	running := true
	stop = func() {
		if running {
			running = false
			h.Stop(log, context.Background())
		}
	}
	t.Cleanup(stop)
	return bpfRoot, sock, stop
}
