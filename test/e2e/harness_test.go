package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// setup gates a test: root (or a failure under CI), not -short, binaries built.
func setup(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end suite: skipped with -short")
	}
	testutil.RequirePrivileged(t)
	needBinaries(t, "membrane-agent", "membrane-cni", "cnitool")
}

// ---- the agent -------------------------------------------------------

type agent struct {
	t       *testing.T
	Dir     string
	Socket  string
	BPFRoot string
	PodCIDR netip.Prefix
	// PodCIDRv6 is set for a dual-stack agent.
	PodCIDRv6 netip.Prefix
	Client    *client.Client

	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

type agentOpts struct {
	// Bits is the pod CIDR's prefix length (default 24).
	Bits int
	// DualStack gives the agent an IPv6 pod CIDR too.
	DualStack bool
	Extra     []string
}

// startAgent runs membrane-agent on temporary paths and waits until it
// answers /v1/healthz. It is stopped (by PID) when the test ends.
func startAgent(t *testing.T, o agentOpts) *agent {
	t.Helper()
	if o.Bits == 0 {
		o.Bits = 24
	}
	dir, err := os.MkdirTemp("", "mbe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &agent{
		t:       t,
		Dir:     dir,
		Socket:  filepath.Join(dir, "agent.sock"),
		BPFRoot: testutil.BPFDir(t),
		PodCIDR: freePodCIDR(t, o.Bits),
		logPath: filepath.Join(dir, "agent.log"),
	}
	a.Client = client.New(a.Socket)
	extra := o.Extra
	if o.DualStack {
		a.PodCIDRv6 = freePodCIDRv6(t)
		extra = append([]string{"--pod-cidr-v6", a.PodCIDRv6.String()}, extra...)
	}
	a.start(extra)
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() || os.Getenv("MEMBRANE_E2E_KEEP_LOGS") == "1" {
			a.dumpLog()
		}
	})
	return a
}

func (a *agent) start(extra []string) {
	a.t.Helper()
	args := append([]string{
		"--socket", a.Socket,
		"--state-dir", filepath.Join(a.Dir, "state"),
		"--bpf-root", a.BPFRoot,
		"--pod-cidr", a.PodCIDR.String(),
	}, extra...)
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	a.cmd = exec.Command(bins.agent, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatalf("starting membrane-agent: %v", err)
	}
	logf.Close()
	a.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(a.cmd, a.exited)

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Healthz(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-a.exited:
			a.dumpLog()
			a.t.Fatalf("membrane-agent %s exited during start: %v", strings.Join(args, " "), a.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			a.dumpLog()
			a.t.Fatalf("membrane-agent did not answer on %s within 20s: %v", a.Socket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the agent: SIGTERM, SIGKILL after 10 s.
func (a *agent) Stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.t.Errorf("membrane-agent (pid %d) ignored SIGTERM for 10s; killing it", a.cmd.Process.Pid)
		a.cmd.Process.Kill()
		<-a.exited
	}
}

func (a *agent) dumpLog() {
	raw, _ := os.ReadFile(a.logPath)
	// Hive's start/stop bookkeeping says nothing about the failure.
	var b []byte
	for line := range bytes.Lines(raw) {
		if !bytes.Contains(line, []byte("msg=Invoked")) && !bytes.Contains(line, []byte("hook executed")) {
			b = append(b, line...)
		}
	}
	if len(b) > 20000 {
		b = append([]byte("...\n"), b[len(b)-20000:]...)
	}
	a.t.Logf("membrane-agent log (%s):\n%s", a.logPath, b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// putPod registers pod labels through the API.
func (a *agent) putPod(ns, name string, labels map[string]string) {
	a.t.Helper()
	if _, err := a.Client.PutPod(ctxT(a.t), &models.Pod{Namespace: ns, Name: name, Labels: labels}); err != nil {
		a.t.Fatalf("PUT /v1/pod/%s/%s: %v", ns, name, err)
	}
}

// endpoint is the agent's endpoint of an attachment, or nil if it has none.
func (a *agent) endpoint(att plugin.Attachment) *models.Endpoint {
	a.t.Helper()
	ep, err := a.Client.GetEndpoint(ctxT(a.t), att.EndpointID())
	if client.IsStatus(err, 404) {
		return nil
	}
	if err != nil {
		a.t.Fatalf("GET endpoint %s: %v", att.EndpointID(), err)
	}
	return ep
}

// ownedIPs lists the addresses IPAM holds for an attachment.
func (a *agent) ownedIPs(att plugin.Attachment) []string {
	a.t.Helper()
	rows, err := a.Client.ListIPs(ctxT(a.t))
	if err != nil {
		a.t.Fatalf("GET /v1/ipam: %v", err)
	}
	var ips []string
	for _, r := range rows {
		if r.Owner == att.Owner() {
			ips = append(ips, r.IP)
		}
	}
	return ips
}

func (a *agent) allIPs() []models.IPAMAllocation {
	a.t.Helper()
	rows, err := a.Client.ListIPs(ctxT(a.t))
	if err != nil {
		a.t.Fatalf("GET /v1/ipam: %v", err)
	}
	return rows
}

func (a *agent) endpoints() []models.Endpoint {
	a.t.Helper()
	eps, err := a.Client.ListEndpoints(ctxT(a.t))
	if err != nil {
		a.t.Fatalf("GET /v1/endpoint: %v", err)
	}
	return eps
}

// ipcache reads the pinned ipcache map: prefix -> identity.
func (a *agent) ipcache() map[netip.Prefix]uint32 {
	a.t.Helper()
	m, err := maps.OpenPinned(a.BPFRoot, maps.IPCacheMapName)
	if err != nil {
		a.t.Fatal(err)
	}
	defer m.Close()
	out := map[netip.Prefix]uint32{}
	var k maps.IPCacheKey
	var v maps.IPCacheValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		p, err := k.Prefix()
		if err != nil {
			a.t.Fatal(err)
		}
		out[p] = v.Identity
	}
	if err := it.Err(); err != nil {
		a.t.Fatalf("iterating %s: %v", maps.IPCacheMapName, err)
	}
	return out
}

// ---- pod CIDRs -------------------------------------------------------

var cidrMu sync.Mutex
var cidrsTaken = map[netip.Prefix]bool{}

// freePodCIDR picks 10.X.Y.0/bits with X in 210..249 that overlaps no
// route or address on this machine and no other test of this run, so
// concurrent suites (and other engineers' runs) do not collide.
func freePodCIDR(t *testing.T, bits int) netip.Prefix {
	t.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("listing routes: %v", err)
	}
	used := func(p netip.Prefix) bool {
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			rp, ok := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if ok && ones > 0 && netip.PrefixFrom(rp, ones).Overlaps(p) {
				return true
			}
		}
		for q := range cidrsTaken {
			if q.Overlaps(p) {
				return true
			}
		}
		return false
	}
	for range 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(210 + rand.IntN(40)), byte(rand.IntN(256)), 0}), bits).Masked()
		if !used(p) {
			cidrsTaken[p] = true
			return p
		}
	}
	t.Fatal("no free pod CIDR in 10.210.0.0-10.249.255.255")
	return netip.Prefix{}
}

// freePodCIDRv6 picks fd00:2NN:XXXX::/64 that no IPv6 route on this
// machine overlaps.
func freePodCIDRv6(t *testing.T) netip.Prefix {
	t.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("listing routes: %v", err)
	}
	for range 1000 {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0xfd, 0x00, 0x02, byte(0x10+rand.IntN(0x40))
		b[4], b[5] = byte(rand.IntN(256)), byte(rand.IntN(256))
		p := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		free := !cidrsTaken[p]
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			if rp, ok := netip.AddrFromSlice(r.Dst.IP); ok && ones > 0 && netip.PrefixFrom(rp, ones).Overlaps(p) {
				free = false
			}
		}
		if free {
			cidrsTaken[p] = true
			return p
		}
	}
	t.Fatal("no free IPv6 pod CIDR")
	return netip.Prefix{}
}

// ---- CNI networks and pods -------------------------------------------

var netCounter atomic.Int64

// network is a CNI network configuration list using membrane-cni with one
// agent, in a directory of its own (cnitool's NETCONFPATH).
type network struct {
	t     *testing.T
	Name  string
	Dir   string
	agent *agent
	// CapArgs, if set, is cnitool's CAP_ARGS: the runtimeConfig values
	// libcni injects for the capabilities the configuration declares.
	CapArgs string
}

// newNetwork writes the conflist. plugin holds extra keys of the plugin's
// entry (mtu, ...); cniVersion "" means 1.1.0.
func newNetwork(t *testing.T, a *agent, cniVersion string, pluginConf map[string]any) *network {
	t.Helper()
	if cniVersion == "" {
		cniVersion = "1.1.0"
	}
	n := &network{
		t:     t,
		Name:  fmt.Sprintf("mbe2e-%d-%d", os.Getpid(), netCounter.Add(1)),
		Dir:   filepath.Join(a.Dir, fmt.Sprintf("net.d-%d", netCounter.Load())),
		agent: a,
	}
	entry := map[string]any{"type": "membrane-cni", "socket": a.Socket}
	for k, v := range pluginConf {
		entry[k] = v
	}
	conf := map[string]any{"cniVersion": cniVersion, "name": n.Name, "plugins": []any{entry}}
	b, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "10-"+n.Name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// cnitool (libcni) caches results under /var/lib/cni.
		files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", n.Name+"-*"))
		for _, f := range files {
			os.Remove(f)
		}
	})
	return n
}

// pod is a network namespace standing in for a pod sandbox.
type pod struct {
	Namespace   string
	Name        string
	NetnsName   string
	Netns       string // path, as the runtime passes it
	ContainerID string // what cnitool derives from the netns path
	Result      *current.Result
}

func (p *pod) Attachment() plugin.Attachment {
	return plugin.Attachment{ContainerID: p.ContainerID, IfName: "eth0"}
}

// IP is the pod's IPv4 address from its ADD result.
func (p *pod) IP() netip.Addr {
	for _, ipc := range p.Result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			return a
		}
	}
	return netip.Addr{}
}

// IPv6 is the pod's IPv6 address from its ADD result, if any.
func (p *pod) IPv6() netip.Addr {
	for _, ipc := range p.Result.IPs {
		if ipc.Address.IP.To4() == nil {
			a, _ := netip.AddrFromSlice(ipc.Address.IP)
			return a
		}
	}
	return netip.Addr{}
}

// Args is the CNI_ARGS containerd would pass.
func (p *pod) Args() string {
	return fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=uid-%s;IgnoreUnknown=1",
		p.Namespace, p.Name, p.ContainerID, p.Name)
}

var podCounter atomic.Int64

// newPod makes the pod's netns; it, and the host veth an ADD may have
// made, are removed at cleanup.
func newPod(t *testing.T, namespace, name string) *pod {
	t.Helper()
	nsName := fmt.Sprintf("mbe2e-%d-%d", os.Getpid(), podCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", nsName, err, out)
	}
	p := &pod{Namespace: namespace, Name: name, NetnsName: nsName, Netns: "/var/run/netns/" + nsName}
	sum := sha512.Sum512([]byte(p.Netns))
	p.ContainerID = fmt.Sprintf("cnitool-%x", sum[:10])
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", nsName).Run()
		if l, err := netlink.LinkByName(p.Attachment().HostVeth()); err == nil {
			netlink.LinkDel(l)
		}
	})
	return p
}

// cnitool runs `cnitool CMD NET NETNS` with cniArgs as CNI_ARGS.
func (n *network) cnitool(cmd string, p *pod, cniArgs string) (stdout string, err error) {
	c := exec.Command(bins.cnitool, cmd, n.Name, p.Netns)
	c.Env = append(os.Environ(),
		"CNI_PATH="+bins.dir,
		"NETCONFPATH="+n.Dir,
		"CNI_ARGS="+cniArgs,
		"CNI_IFNAME=eth0",
		"CAP_ARGS="+n.CapArgs,
	)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("cnitool %s %s %s: %w: %s%s", cmd, n.Name, p.Netns, err,
			strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// add runs `cnitool add` with the pod's CNI_ARGS and parses the result.
func (n *network) add(p *pod) error {
	return n.addWithArgs(p, p.Args())
}

func (n *network) addWithArgs(p *pod, args string) error {
	out, err := n.cnitool("add", p, args)
	if err != nil {
		return err
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return fmt.Errorf("cnitool add printed no result (%w): %s", err, out)
	}
	p.Result = &res
	return nil
}

func (n *network) del(p *pod) error {
	_, err := n.cnitool("del", p, p.Args())
	return err
}

func (n *network) check(p *pod) error {
	_, err := n.cnitool("check", p, p.Args())
	return err
}

// runPlugin executes membrane-cni directly, the way a runtime does, for
// what cnitool cannot express (an empty CNI_NETNS, a GC with a list of
// valid attachments).
func (n *network) runPlugin(command, containerID, netns string, conf map[string]any) (string, error) {
	entry := map[string]any{"cniVersion": "1.1.0", "name": n.Name, "type": "membrane-cni", "socket": n.agent.Socket}
	for k, v := range conf {
		entry[k] = v
	}
	stdin, _ := json.Marshal(entry)
	c := exec.Command(bins.plugin)
	c.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netns,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+bins.dir,
	)
	c.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if err != nil {
		return out.String(), fmt.Errorf("membrane-cni %s: %w: %s", command, err, out.String())
	}
	return out.String(), nil
}

// ---- what a user can observe -----------------------------------------

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// ping sends at most three pings, each waiting at most a second, from the pod.
func ping(p *pod, addr string) error {
	var out []byte
	var err error
	for range 3 {
		out, err = exec.Command("ip", "netns", "exec", p.NetnsName, "ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s from pod %s/%s: %w: %s", addr, p.Namespace, p.Name, err, out)
}

// eventually polls cond until it returns nil or the deadline passes. It is
// for state that converges (reconcilers), not a timing assertion: the bound
// is generous and only there so a broken agent cannot hang the suite.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertGone checks that nothing of an attachment is left: host veth,
// addresses, endpoint and (if ip is valid) its ipcache entry.
func assertGone(t *testing.T, a *agent, p *pod, ip netip.Addr) {
	t.Helper()
	att := p.Attachment()
	if linkExists(att.HostVeth()) {
		t.Errorf("pod %s: host veth %s is left behind", p.Name, att.HostVeth())
	}
	if ips := a.ownedIPs(att); len(ips) != 0 {
		t.Errorf("pod %s: addresses %v are still allocated", p.Name, ips)
	}
	if ep := a.endpoint(att); ep != nil {
		t.Errorf("pod %s: endpoint %d (%s) is left behind", p.Name, ep.ID, ep.State)
	}
	if ip.IsValid() {
		eventually(t, 10*time.Second, "ipcache entry of "+ip.String()+" removed", func() error {
			if id, ok := a.ipcache()[netip.PrefixFrom(ip, 32)]; ok {
				return fmt.Errorf("%s -> identity %d", ip, id)
			}
			return nil
		})
	}
}

// netipInvalid stands for "no address": assertGone skips the ipcache check.
var netipInvalid netip.Addr

// identities maps each cluster identity (>= 256) the agent lists to the
// number of endpoints using it.
func (a *agent) identities() map[uint32]int {
	a.t.Helper()
	ids, err := a.Client.ListIdentities(ctxT(a.t))
	if err != nil {
		a.t.Fatalf("GET /v1/identity: %v", err)
	}
	out := map[uint32]int{}
	for _, id := range ids {
		if id.ID >= 256 {
			out[id.ID] = id.Endpoints
		}
	}
	return out
}

// assertNoIdleIdentities: every cluster identity the agent still holds is
// used by an endpoint, i.e. nothing (a failed ADD, a DEL) left a reference.
// Release follows the endpoints table, so it is polled.
func assertNoIdleIdentities(t *testing.T, a *agent) {
	t.Helper()
	eventually(t, 10*time.Second, "identities without endpoints are released", func() error {
		for id, n := range a.identities() {
			if n == 0 {
				return fmt.Errorf("identity %d is held by no endpoint", id)
			}
		}
		return nil
	})
}
