package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/internal/testutil"
)

// A multi-node cluster on this machine: each node is a network namespace
// with its own membrane-agent (nsenter --net), all joined by veths to a
// bridge that lives in a namespace of its own (one L2 segment, as direct
// routing needs), all against one kube-apiserver. The API server listens
// on 127.0.0.1 of the test's namespace, which the nodes cannot reach: a
// TCP proxy on a host-side veth into the segment forwards to it, and the
// nodes' kubeconfig names that address (and the certificate's name,
// localhost). Stopping the API server behind the proxy is an outage to
// the nodes like any other.
//
//	test's netns: kube-apiserver 127.0.0.1:P  <- proxy SEG.1:Q -- veth --+
//	bridge netns: br0 ---------------------------------------------------+
//	node netns (one per node): eth0 SEG.(10+i), default route via SEG.1,
//	    ip_forward on, its agent, its pods' host veths

var segCounter atomic.Int64

// segment is the L2 segment: the bridge's namespace and the host side.
type segment struct {
	bridgeNS string
	subnet   netip.Prefix
	hostIP   netip.Addr
	nodes    int
}

// ipCmd runs `ip ARGS...`, failing the test if it fails.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs argv in a named network namespace (nsenter --net: nothing
// else changes, the bpffs stays visible).
func inNetns(netns string, argv ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + netns, "--"}, argv...)...)
}

// newSegment makes the bridge's namespace and a host-side veth into it
// with the first address of a free /24 in 10.250.0.0/16 (outside the
// pod CIDR pools).
func newSegment(t *testing.T) *segment {
	t.Helper()
	n := segCounter.Add(1)
	s := &segment{bridgeNS: fmt.Sprintf("mbmn-br-%d-%d", os.Getpid(), n)}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(rand.IntN(256)), 0}), 24)
		free := true
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if ones > 0 && netip.PrefixFrom(ip, ones).Overlaps(p) {
				free = false
			}
		}
		if free {
			s.subnet = p
			break
		}
	}
	if !s.subnet.IsValid() {
		t.Fatal("no free /24 in 10.250.0.0/16 for the nodes' segment")
	}
	s.hostIP = s.subnet.Addr().Next()
	ipCmd(t, "netns", "add", s.bridgeNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", s.bridgeNS).Run() })
	ipCmd(t, "-n", s.bridgeNS, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", s.bridgeNS, "link", "set", "br0", "up")

	host := fmt.Sprintf("mbmn%d-%d", os.Getpid()%100000, n)
	ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", "host", "netns", s.bridgeNS)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(host); err == nil {
			netlink.LinkDel(l)
		}
	})
	ipCmd(t, "-n", s.bridgeNS, "link", "set", "host", "master", "br0", "up")
	ipCmd(t, "addr", "add", netip.PrefixFrom(s.hostIP, 24).String(), "dev", host)
	ipCmd(t, "link", "set", host, "up")
	return s
}

// addNode makes a node's namespace on the segment and returns its name
// and address.
func (s *segment) addNode(t *testing.T, name string) (string, netip.Addr) {
	t.Helper()
	s.nodes++
	netns := fmt.Sprintf("mbmn-%s-%d", name, os.Getpid())
	ip := s.subnet.Addr()
	for range 10 + s.nodes {
		ip = ip.Next()
	}
	ipCmd(t, "netns", "add", netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	port := fmt.Sprintf("p%d", s.nodes)
	ipCmd(t, "-n", s.bridgeNS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
	ipCmd(t, "-n", s.bridgeNS, "link", "set", port, "master", "br0", "up")
	ipCmd(t, "-n", netns, "addr", "add", netip.PrefixFrom(ip, 24).String(), "dev", "eth0")
	ipCmd(t, "-n", netns, "link", "set", "eth0", "up")
	ipCmd(t, "-n", netns, "link", "set", "lo", "up")
	ipCmd(t, "-n", netns, "route", "add", "default", "via", s.hostIP.String())
	if out, err := inNetns(netns, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("ip_forward in %s: %v: %s", netns, err, out)
	}
	return netns, ip
}

// proxy forwards TCP from the segment to the API server until the test
// ends.
func proxy(t *testing.T, listen netip.Addr, to string) string {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer in.Close()
				out, err := net.Dial("tcp", to)
				if err != nil {
					return // the API server is stopped: the client sees a closed connection
				}
				defer out.Close()
				track(in, true)
				track(out, true)
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{}, 2)
				go func() { io.Copy(out, in); done <- struct{}{} }()
				go func() { io.Copy(in, out); done <- struct{}{} }()
				<-done
			})
		}
	})
	return ln.Addr().String()
}

// multiCluster is the API server and the segment the nodes join.
type multiCluster struct {
	kube       *kubetest.Cluster
	seg        *segment
	kubeconfig string // the admin's, through the proxy
	bpfRoot    string // the test's bpffs dir: one subdirectory per node
}

func newMultiCluster(t *testing.T, namespaces ...string) *multiCluster {
	t.Helper()
	m := &multiCluster{kube: kubeCluster(t, namespaces...), seg: newSegment(t), bpfRoot: testutil.BPFDir(t)}
	addr := proxy(t, m.seg.hostIP, strings.TrimPrefix(m.kube.Server(), "https://"))
	cfg, err := clientcmd.LoadFromFile(m.kube.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr
		c.TLSServerName = "localhost"
	}
	m.kubeconfig = m.kube.Kubeconfig() + ".nodes"
	if err := clientcmd.WriteToFile(*cfg, m.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return m
}

// mnode is a node: its namespace, address, agent and CNI network.
type mnode struct {
	name  string
	netns string
	ip    netip.Addr
	agent *agent
	net   *network
}

// startNode makes a node on the segment and starts its agent there;
// with nodeIP the agent is told its address (--node-ip), else it finds
// it from the default route.
func (m *multiCluster) startNode(t *testing.T, name string, nodeIP bool) *mnode {
	t.Helper()
	n := m.newNode(t, name, nodeIP)
	if err := n.agent.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// startTwoNodes starts node-a and node-b (told their addresses) and
// waits until each routes the other's pod CIDR.
func (m *multiCluster) startTwoNodes(t *testing.T) (a, b *mnode) {
	t.Helper()
	a, b = m.startNode(t, "node-a", true), m.startNode(t, "node-b", true)
	waitRoute(t, a, b.agent.PodCIDR, b.ip, true)
	waitRoute(t, b, a.agent.PodCIDR, a.ip, true)
	return a, b
}

// newNode makes a node on the segment and prepares its agent, with extra
// flags, without starting it (agent.Start does). The agent is stopped,
// by its PID, when the test ends.
func (m *multiCluster) newNode(t *testing.T, name string, nodeIP bool, extra ...string) *mnode {
	t.Helper()
	netns, ip := m.seg.addNode(t, name)
	if err := os.MkdirAll(filepath.Join(m.bpfRoot, name), 0o755); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--k8s-kubeconfig", m.kubeconfig, "--node-name", name}
	if nodeIP {
		flags = append(flags, "--node-ip", ip.String())
	}
	a := &agent{t: t, Agent: e2eutil.NewAgent(t, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		TempPattern: "mbmn",
		Pool:        e2eutil.PoolE2E,
		Netns:       netns,
		BPFRoot:     filepath.Join(m.bpfRoot, name),
		Extra:       append(flags, extra...),
		ReadyWithin: time.Minute,
	})}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() || os.Getenv("MEMBRANE_E2E_KEEP_LOGS") == "1" {
			a.DumpLog()
		}
	})
	n := newNetwork(t, a, "", nil)
	n.NodeNetns = netns
	return &mnode{name: name, netns: netns, ip: ip, agent: a, net: n}
}

// pod creates the Pod object (on this node) and its sandbox, and runs ADD
// in the node's namespace.
func (n *mnode) pod(t *testing.T, m *multiCluster, ns, name string) *pod {
	t.Helper()
	kubePod(t, m.kube, ns, name, name, n.name)
	p := newPod(t, ns, name)
	addK8sPod(t, m.kube, n.net, p)
	return p
}

// routes are the node's routes of membrane's protocol, "DST via GW".
func (n *mnode) routes(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", n.netns, "-4", "route", "show", "proto", "211").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route in %s: %v: %s", n.netns, err, out)
	}
	var rs []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "via" {
			rs = append(rs, f[0]+" via "+f[2])
		}
	}
	return rs
}

// hasRoute reports whether the node routes dst via gw.
func (n *mnode) hasRoute(t *testing.T, dst netip.Prefix, gw netip.Addr) bool {
	t.Helper()
	for _, r := range n.routes(t) {
		if r == dst.String()+" via "+gw.String() {
			return true
		}
	}
	return false
}

// nodeList is `membrane node list -o json` on the node's agent.
func (n *mnode) nodeList(t *testing.T) (map[string]nodeListRow, error) {
	t.Helper()
	var rows []nodeListRow
	if err := n.cliJSON(&rows, "node", "list"); err != nil {
		return nil, err
	}
	got := map[string]nodeListRow{}
	for _, r := range rows {
		got[r.Name] = r
	}
	return got, nil
}

type nodeListRow struct {
	Name      string   `json:"name"`
	Local     bool     `json:"local"`
	Addresses []string `json:"addresses"`
	PodCIDRs  []string `json:"podCIDRs"`
	Routes    string   `json:"routes"`
}

// labeledPod is pod with the Pod object's labels given (the identity's).
func (n *mnode) labeledPod(t *testing.T, m *multiCluster, ns, name string, labels map[string]string) *pod {
	t.Helper()
	var ls []string
	for k, v := range labels {
		ls = append(ls, fmt.Sprintf("%s: %s", k, v))
	}
	m.kube.Apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {namespace: %s, name: %s, labels: {%s}}
spec: {nodeName: %s, containers: [{name: c, image: registry.k8s.io/pause:3.10}]}
`, ns, name, strings.Join(ls, ", "), n.name))
	p := newPod(t, ns, name)
	addK8sPod(t, m.kube, n.net, p)
	return p
}

// bpfIPCache is `membrane bpf ipcache list -o json` on the node's agent,
// by prefix: the pinned map with the source of each entry's row.
func (n *mnode) bpfIPCache(t *testing.T) (map[netip.Prefix]bpfIPCacheEntry, error) {
	t.Helper()
	var rows []bpfIPCacheEntry
	if err := n.cliJSON(&rows, "bpf", "ipcache", "list", "--bpf-root", n.agent.BPFRoot); err != nil {
		return nil, err
	}
	got := map[netip.Prefix]bpfIPCacheEntry{}
	for _, r := range rows {
		p, err := netip.ParsePrefix(r.Prefix)
		if err != nil {
			return nil, fmt.Errorf("membrane bpf ipcache list: prefix %q: %w", r.Prefix, err)
		}
		got[p] = r
	}
	return got, nil
}

type bpfIPCacheEntry struct {
	Prefix   string `json:"prefix"`
	Identity uint32 `json:"identity"`
	Source   string `json:"source"`
}

// cliJSON runs `membrane ARGS -o json` against the node's agent and
// decodes its output into v.
func (n *mnode) cliJSON(v any, args ...string) error {
	what := "membrane " + strings.Join(args, " ")
	out, err := exec.Command(bins.CLI, append(append([]string{"--socket", n.agent.Socket}, args...), "-o", "json")...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: %w: %s", what, err, out)
	}
	return nil
}
