package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/podmeta"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/cells/status"
	"github.com/membrane-net/membrane/internal/testutil"
)

// TestAgentSession drives the CLI against the stock agent the way an
// operator would: register pods, look at an endpoint the CNI plugin would
// have created, relabel and delete it, and read the pinned maps before and
// after the agent stops. It asserts what the CLI shows of the agent's real
// answers; the agent's own behaviour is tested with its cells and end to
// end.
func TestAgentSession(t *testing.T) {
	a := startAgent(t)

	out := ok(t, a.args("status")...)
	if !strings.HasPrefix(out, "Agent:     healthy\n") || !strings.Contains(out, "\nCELL ") || !strings.Contains(out, "\ntotal ") {
		t.Fatalf("status:\n%s", out)
	}

	// Pods from a manifest file.
	wantLines(t, ok(t, a.args("pod", "apply", "-f", "testdata/pods.yaml")...),
		"pod default/web applied", "pod storage/db applied", "pod default/cache applied")
	var pods []models.Pod
	mustJSON(t, ok(t, a.args("pod", "list", "-o", "json")...), &pods)
	if len(pods) != 3 || pods[1].Name != "web" || pods[1].Labels["app.kubernetes.io/part-of"] != "shop" || pods[2].UID == "" {
		t.Fatalf("pods %+v", pods)
	}

	created := a.addEndpoint(endpointSpec{container: "c0ffee0123456789", pod: "default/web"})
	id := strconv.Itoa(int(created.ID))
	ip := created.Addressing.IPv4

	var eps []models.Endpoint
	mustJSON(t, ok(t, a.args("endpoint", "list", "-o", "json")...), &eps)
	if len(eps) != 1 || eps[0].ID != created.ID || eps[0].K8sPodName != "web" || eps[0].Addressing.IPv4 != ip ||
		!slices.Contains(eps[0].Labels, "k8s:app=web") {
		t.Fatalf("endpoints %+v", eps)
	}
	out = ok(t, a.args("endpoint", "list")...)
	if !strings.Contains(out, "default/web") || !strings.Contains(out, "c0ffee012345:eth0") {
		t.Fatalf("endpoint list:\n%s", out)
	}
	// Every form of endpoint ID reaches the same endpoint through the real router.
	for _, ref := range []string{id, "pod-name:default/web", "container-id:c0ffee0123456789",
		"cni-attachment-id:c0ffee0123456789:eth0", "ipv4:" + ip} {
		if out := ok(t, a.args("endpoint", "get", ref)...); !strings.HasPrefix(out, "ID:                    "+id+"\n") {
			t.Fatalf("endpoint get %s:\n%s", ref, out)
		}
	}
	if out := ok(t, a.args("endpoint", "log", id)...); strings.Count(out, "\n") < 2 {
		t.Fatalf("endpoint log:\n%s", out)
	}
	out = ok(t, a.args("endpoint", "labels", "pod-name:default/web", "--add", "tier=gold")...)
	if !strings.Contains(out, "requested   container:tier=gold\n") || !strings.Contains(out, "pod         k8s:app=web\n") {
		t.Fatalf("endpoint labels:\n%s", out)
	}

	out = ok(t, a.args("ipam", "list")...)
	if !strings.Contains(out, ip) || !strings.Contains(out, "c0ffee0123456789:eth0") {
		t.Fatalf("ipam list:\n%s", out)
	}
	wantLines(t, ok(t, a.args("statedb", "endpoints", "--columns", "id,k8s-pod-name")...),
		byID("K8S-POD-NAME", map[*models.Endpoint][]string{created: {"web"}})...)
	if out := ok(t, a.args("statedb")...); !strings.Contains(out, "\nendpoints ") || !strings.Contains(out, "\npods ") {
		t.Fatalf("statedb tables:\n%s", out)
	}

	wantLines(t, ok(t, a.args("endpoint", "delete", id)...), "endpoint "+id+" deleted")
	wantLines(t, ok(t, a.args("endpoint", "list", "-o", "json")...), "[]")
	if e := fails(t, a.args("endpoint", "get", id)...); !strings.Contains(e, "(HTTP 404)") {
		t.Fatalf("stderr %q", e)
	}
	wantLines(t, ok(t, a.args("pod", "delete", "default/web")...), "pod default/web deleted")

	// The maps outlive the agent; the API does not.
	ok(t, "bpf", "ipcache", "list", "--bpf-root", a.bpfRoot)
	a.stop()
	if e := fails(t, a.args("status")...); !strings.Contains(e, "cannot reach membrane-agent at "+a.sock) {
		t.Fatalf("stderr %q", e)
	}
	ok(t, "bpf", "ipcache", "list", "--bpf-root", a.bpfRoot)
	ok(t, "bpf", "endpoint", "list", "--bpf-root", a.bpfRoot)
}

func padRight(s string, n int) string { return s + strings.Repeat(" ", max(0, n-len(s))) }

// testAgent is membrane-agent's cells running in this process on
// temporary paths, in the network namespace TestMain gave the tests.
type testAgent struct {
	t       *testing.T
	sock    string
	bpfRoot string
	client  *client.Client
	// stop stops the agent once; it also runs when the test ends.
	stop func()
}

type agentSetup struct {
	cells     []cell.Cell
	overrides []func(*hive.Hive)
}

// agentOption changes the agent startAgent runs.
type agentOption func(*agentSetup)

// withCells runs a custom agent of these cells instead of the stock one
// (docs/custom-agent.md).
func withCells(cs ...cell.Cell) agentOption {
	return func(s *agentSetup) { s.cells = cs }
}

// withConfig sets a cell's configuration, as the agent's flags do.
func withConfig[C cell.Flagger](override func(*C)) agentOption {
	return func(s *agentSetup) {
		s.overrides = append(s.overrides, func(h *hive.Hive) { hive.AddConfigOverride(h, override) })
	}
}

// Configurations the tests use.
var (
	// dualStack gives pods an IPv6 address too (--pod-cidr-v6). A cell's
	// configuration is set once: the IPAM test sets both ranges itself.
	dualStack = withConfig(func(c *ipam.Config) { c.PodCIDRV6 = "fd00:200::/64" })
	// podsWaitedFor keeps the endpoint of a pod the agent does not know
	// waiting for the pod's labels for as long as a test runs
	// (--pod-metadata-timeout), rather than 10s.
	podsWaitedFor = withConfig(func(c *endpointmanager.Config) { c.PodMetadataTimeout = time.Hour })
	// apiOnly is a custom agent of the status cell alone (NewAgentHive
	// adds the API server): it serves /v1/healthz and none of the routes
	// of the other cells.
	apiOnly = withCells(status.Cell)
)

// withManifests registers the pods of the manifests in dir
// (--pod-manifest-dir); startAgent returns once they are loaded.
func withManifests(dir string) agentOption {
	return withConfig(func(c *podmeta.Config) {
		c.PodManifestDir, c.PodManifestInterval = dir, 50*time.Millisecond
	})
}

// startAgent runs the stock agent's cells (or those of withCells) in
// this process on temporary paths until the test ends. One agent a test:
// its bpffs directory is the test's (testutil.BPFDir), so another agent
// goes in a subtest.
func startAgent(t *testing.T, opts ...agentOption) *testAgent {
	t.Helper()
	setup := agentSetup{cells: []cell.Cell{cells.DefaultCells}}
	for _, o := range opts {
		o(&setup)
	}
	a := &testAgent{t: t, bpfRoot: testutil.BPFDir(t), sock: filepath.Join(tempDirShort(t), "membrane.sock")} // BPFDir is also the privileged gate
	a.client = client.New(a.sock)
	h := cells.NewAgentHive(setup.cells...)
	hive.AddConfigOverride(h, func(c *apiserver.Config) { c.Socket = a.sock })
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = t.TempDir() })
	hive.AddConfigOverride(h, func(c *loader.Config) { c.BPFRoot = a.bpfRoot })
	for _, o := range setup.overrides {
		o(h)
	}
	log := hivetest.Logger(t)
	if err := h.Start(log, context.Background()); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	var once sync.Once
	a.stop = func() { once.Do(func() { h.Stop(log, context.Background()) }) }
	t.Cleanup(a.stop)
	return a
}

// args prefixes a command line with the agent's socket.
func (a *testAgent) args(args ...string) []string {
	return append([]string{"--socket", a.sock}, args...)
}

// ctx bounds one call to the API.
func (a *testAgent) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	a.t.Cleanup(cancel)
	return ctx
}

func (a *testAgent) putPod(p models.Pod) {
	a.t.Helper()
	if _, err := a.client.PutPod(a.ctx(), &p); err != nil {
		a.t.Fatalf("register pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// waitForPod waits, boundedly, until the agent knows the pod (one from
// a manifest directory appears at its next scan).
func (a *testAgent) waitForPod(key string) {
	a.t.Helper()
	ns, name, _ := strings.Cut(key, "/")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var p models.Pod
		err := a.client.Get(a.ctx(), "/v1/pod/"+ns+"/"+name, &p)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("pod %s never registered: %v", key, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// endpointSpec is what membrane-cni knows of an attachment.
type endpointSpec struct {
	container string // container ID; its first 10 characters name the host veth
	pod       string // NAMESPACE/NAME, or "" for a container without a pod
	family    string // the address family to ask IPAM for ("": every one the agent has)
	// onLo attaches the endpoint to lo (ifindex 1), the device BPF_PROG_RUN
	// runs tc programs on, instead of a veth.
	onLo bool
	// noWait returns as soon as the agent took the endpoint, where the
	// plugin waits for its first regeneration (a sync build): for an
	// endpoint whose pod the agent does not know yet.
	noWait bool
}

// addEndpoint does what membrane-cni's ADD does for an attachment: allocate
// its addresses, make its veth pair and create the endpoint.
func (a *testAgent) addEndpoint(s endpointSpec) *models.Endpoint {
	a.t.Helper()
	ns, name, _ := strings.Cut(s.pod, "/")
	ip, err := a.client.AllocateIP(a.ctx(), &models.IPAMRequest{Owner: s.container + ":eth0", Pod: s.pod, Family: s.family})
	if err != nil {
		a.t.Fatalf("allocate an address for %s: %v", s.container, err)
	}
	req := &models.EndpointChangeRequest{
		ContainerID: s.container, ContainerInterfaceName: "eth0", Addressing: &models.AddressPair{},
		K8sNamespace: ns, K8sPodName: name, SyncBuildEndpoint: !s.noWait,
	}
	if ip.IPv4 != nil {
		req.Addressing.IPv4 = ip.IPv4.IP
	}
	if ip.IPv6 != nil {
		req.Addressing.IPv6 = ip.IPv6.IP
	}
	if s.onLo {
		requireOwnNetns(a.t)
		req.InterfaceName, req.InterfaceIndex = "lo", 1
	} else {
		host, peer := vethPair(a.t, "mb"+s.container[:min(10, len(s.container))])
		req.InterfaceName, req.InterfaceIndex = host.Attrs().Name, int64(host.Attrs().Index)
		req.Mac, req.HostMac = peer.Attrs().HardwareAddr.String(), host.Attrs().HardwareAddr.String()
	}
	ep, err := a.client.PutEndpoint(a.ctx(), "0", req)
	if err != nil {
		a.t.Fatalf("create the endpoint of %s: %v", s.container, err)
	}
	return ep
}

// vethPair makes a veth pair named name (the host end, which the agent
// attaches to) and name+"c" (the container's end, left in the same
// namespace: no traffic crosses it), removed when the test ends.
func vethPair(t *testing.T, name string) (host, peer netlink.Link) {
	t.Helper()
	requireOwnNetns(t)
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: name + "c"}
	v.Name = name
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("create veth %s: %v", name, err)
	}
	t.Cleanup(func() { netlink.LinkDel(v) })
	var err error
	if host, err = netlink.LinkByName(name); err == nil {
		peer, err = netlink.LinkByName(v.PeerName)
	}
	if err != nil {
		t.Fatal(err)
	}
	return host, peer
}

// silentSocket is a unix socket that accepts connections and never reads
// or answers them: what the CLI meets when the agent hangs. It is a bare
// listener, not a stand-in for the agent's API.
func silentSocket(t *testing.T) string {
	t.Helper()
	sock := tempSocket(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return sock
}

// unusedEndpointID is an endpoint ID no endpoint of eps has.
func unusedEndpointID(eps ...*models.Endpoint) string {
	for id := uint16(endpointmanager.MinEndpointID); ; id++ {
		if !slices.ContainsFunc(eps, func(ep *models.Endpoint) bool { return ep.ID == id }) {
			return strconv.Itoa(int(id))
		}
	}
}

// requireOwnNetns stops a test that would change network interfaces
// outside the namespace TestMain runs the tests in.
func requireOwnNetns(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	if os.Getenv(netnsEnv) != "1" {
		t.Fatal("this test changes network interfaces: it runs in the network namespace TestMain makes for the tests")
	}
}
