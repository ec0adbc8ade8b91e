package bench

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
	"github.com/membrane-net/membrane/internal/testutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// refPluginDir is where Debian's containernetworking-plugins live.
const refPluginDir = "/usr/lib/cni"

// setup gates a benchmark that runs real binaries: root (or a failure
// under CI), the binaries built, the reference plugins installed.
func setup(b *testing.B) {
	b.Helper()
	testutil.RequirePrivileged(b)
	if bins.err != nil {
		b.Fatal(bins.err)
	}
	if bins.agent == "" {
		b.Fatal("binaries were not built (TestMain builds them only when -test.bench is set)")
	}
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPluginDir, p)); err != nil {
			b.Fatalf("reference plugin %s missing (%v): install containernetworking-plugins (make deps)", p, err)
		}
	}
	// The whole run is one measurement; ns/op would only be its wall time.
	b.ReportMetric(0, "ns/op")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ctxFor(b testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	b.Cleanup(cancel)
	return ctx
}

// ---- the agent -------------------------------------------------------

type agent struct {
	b       testing.TB
	Dir     string
	Socket  string
	BPFRoot string
	PodCIDR netip.Prefix
	Client  *client.Client

	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// startAgent runs membrane-agent on temporary paths (socket, state dir,
// bpffs dir, a free pod CIDR) and waits until it answers /v1/healthz. It
// is stopped, by its PID, when the benchmark ends.
func startAgent(b testing.TB, extra ...string) *agent {
	b.Helper()
	dir, err := os.MkdirTemp("", "mbbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	a := &agent{
		b:       b,
		Dir:     dir,
		Socket:  filepath.Join(dir, "agent.sock"),
		BPFRoot: testutil.BPFDir(b),
		PodCIDR: freePodCIDR(b),
		logPath: filepath.Join(dir, "agent.log"),
	}
	a.Client = client.New(a.Socket)
	args := append([]string{
		"--socket", a.Socket,
		"--state-dir", filepath.Join(dir, "state"),
		"--bpf-root", a.BPFRoot,
		"--pod-cidr", a.PodCIDR.String(),
	}, extra...)
	logf, err := os.Create(a.logPath)
	if err != nil {
		b.Fatal(err)
	}
	a.cmd = exec.Command(bins.agent, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	err = a.cmd.Start()
	logf.Close()
	if err != nil {
		b.Fatalf("starting membrane-agent: %v", err)
	}
	a.exited = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.exited) }()
	b.Cleanup(func() {
		a.stop()
		if b.Failed() {
			a.dumpLog()
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Healthz(ctx)
		cancel()
		if err == nil {
			return a
		}
		select {
		case <-a.exited:
			b.Fatalf("membrane-agent %s exited during start: %v", strings.Join(args, " "), a.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("membrane-agent did not answer on %s within 30s: %v", a.Socket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the agent: SIGTERM, SIGKILL after 10 s.
func (a *agent) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.b.Errorf("membrane-agent (pid %d) ignored SIGTERM for 10s; killing it", a.cmd.Process.Pid)
		a.cmd.Process.Kill()
		<-a.exited
	}
}

func (a *agent) dumpLog() {
	raw, _ := os.ReadFile(a.logPath)
	if len(raw) > 20000 {
		raw = append([]byte("...\n"), raw[len(raw)-20000:]...)
	}
	a.b.Logf("membrane-agent log:\n%s", raw)
}

func (a *agent) putPod(ns, name string, labels map[string]string) {
	a.b.Helper()
	if _, err := a.Client.PutPod(ctxFor(a.b, 30*time.Second), &models.Pod{Namespace: ns, Name: name, Labels: labels}); err != nil {
		a.b.Fatalf("PUT /v1/pod/%s/%s: %v", ns, name, err)
	}
}

// ---- pod CIDRs -------------------------------------------------------

var (
	cidrMu     sync.Mutex
	cidrsTaken = map[netip.Prefix]bool{}
)

// freePodCIDR picks 10.X.Y.0/24 with X in 160..199 (apart from the e2e
// suite's range) that no route on this machine and no other network of
// this run overlaps.
func freePodCIDR(b testing.TB) netip.Prefix {
	b.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		b.Fatalf("listing routes: %v", err)
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
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(160 + rand.IntN(40)), byte(rand.IntN(256)), 0}), 24)
		if !used(p) {
			cidrsTaken[p] = true
			return p
		}
	}
	b.Fatal("no free pod CIDR in 10.160.0.0-10.199.255.255")
	return netip.Prefix{}
}

// ---- CNI networks ----------------------------------------------------

var netCounter atomic.Int64

// network is a CNI network configuration list in a directory of its own
// (cnitool's NETCONFPATH) with the plugin directory it needs (CNI_PATH).
type network struct {
	Plugin  string // "membrane" or "ptp", for tables
	Name    string
	Dir     string
	CNIPath string
}

func writeNetwork(b testing.TB, dir, pluginName, cniPath string, conf map[string]any) *network {
	b.Helper()
	n := &network{
		Plugin:  pluginName,
		Name:    fmt.Sprintf("mbbench-%s-%d-%d", pluginName, os.Getpid(), netCounter.Add(1)),
		CNIPath: cniPath,
	}
	n.Dir = filepath.Join(dir, "net.d-"+n.Name)
	conf["name"] = n.Name
	raw, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "10-"+n.Name+".conflist"), raw, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// cnitool (libcni) caches results under /var/lib/cni.
		files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", n.Name+"-*"))
		for _, f := range files {
			os.Remove(f)
		}
	})
	return n
}

// membraneNetwork is membrane-cni talking to agent a.
func membraneNetwork(b testing.TB, a *agent) *network {
	return writeNetwork(b, a.Dir, "membrane", bins.dir, map[string]any{
		"cniVersion": "1.0.0",
		"plugins":    []any{map[string]any{"type": "membrane-cni", "socket": a.Socket, "mtu": 1500}},
	})
}

// ptpNetwork is the reference: ptp with host-local IPAM on a free /24,
// state in a temporary directory.
func ptpNetwork(b testing.TB) *network {
	dir := b.TempDir()
	subnet := freePodCIDR(b)
	gw := subnet.Addr().Next()
	// ptp cannot route the pod's own subnet via the gateway (the address
	// already put that route there): route the /16 around it, as Debian's
	// example does. The route exists only inside the pods.
	wide, _ := subnet.Addr().Prefix(16)
	return writeNetwork(b, dir, "ptp", refPluginDir, map[string]any{
		"cniVersion": "1.0.0",
		"plugins": []any{map[string]any{
			"type": "ptp", "mtu": 1500,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  []any{[]any{map[string]any{"subnet": subnet.String(), "gateway": gw.String()}}},
				"routes":  []any{map[string]any{"dst": wide.String(), "gw": gw.String()}},
				"dataDir": filepath.Join(dir, "ipam"),
			},
		}},
	})
}

// cnitool runs `cnitool CMD NET NETNS` the way a runtime would call the
// plugin and returns its output and wall time (process start to exit,
// cnitool's own start included, the same for both plugins).
func (n *network) cnitool(cmd string, p *pod) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bins.cnitool, cmd, n.Name, p.Netns)
	c.Env = append(os.Environ(),
		"CNI_PATH="+n.CNIPath,
		"NETCONFPATH="+n.Dir,
		"CNI_ARGS="+p.Args(),
		"CNI_IFNAME=eth0",
	)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	start := time.Now()
	err := c.Run()
	d := time.Since(start)
	if err != nil {
		return out.String(), d, fmt.Errorf("%s: cnitool %s %s: %w: %s%s", n.Plugin, cmd, p.Netns, err,
			strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.String(), d, nil
}

// add attaches the pod and records its IPv4 address.
func (n *network) add(p *pod) (time.Duration, error) {
	out, d, err := n.cnitool("add", p)
	if err != nil {
		return d, err
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return d, fmt.Errorf("%s: cnitool add printed no result (%w): %s", n.Plugin, err, out)
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			p.IP = a
		}
	}
	return d, nil
}

func (n *network) del(p *pod) (time.Duration, error) {
	_, d, err := n.cnitool("del", p)
	return d, err
}

// ---- pods ------------------------------------------------------------

var podCounter atomic.Int64

// pod is a network namespace standing in for a pod sandbox.
type pod struct {
	Namespace   string
	Name        string
	NetnsName   string
	Netns       string // path, as the runtime passes it
	ContainerID string // what cnitool derives from the netns path
	IP          netip.Addr

	removed bool
}

// Args is the CNI_ARGS containerd passes.
func (p *pod) Args() string {
	return fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=uid-%s;IgnoreUnknown=1",
		p.Namespace, p.Name, p.ContainerID, p.Name)
}

// newPod makes the pod's netns (loopback up). It and membrane's host veth
// are removed by remove or, at the latest, when the benchmark ends; the
// veth pairs of both plugins die with the netns.
func newPod(b testing.TB, name string) *pod {
	b.Helper()
	nsName := fmt.Sprintf("mbbench-%d-%d", os.Getpid(), podCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s: %v: %s", nsName, err, out)
	}
	p := &pod{Namespace: "default", Name: name, NetnsName: nsName, Netns: "/var/run/netns/" + nsName}
	b.Cleanup(p.remove)
	if out, err := exec.Command("ip", "-n", nsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		b.Fatalf("ip -n %s link set lo up: %v: %s", nsName, err, out)
	}
	sum := sha512.Sum512([]byte(p.Netns))
	p.ContainerID = fmt.Sprintf("cnitool-%x", sum[:10])
	return p
}

func (p *pod) remove() {
	if p.removed {
		return
	}
	p.removed = true
	exec.Command("ip", "netns", "del", p.NetnsName).Run()
	if l, err := netlink.LinkByName(plugin.HostVethName(p.ContainerID, "eth0")); err == nil {
		netlink.LinkDel(l)
	}
}

// exec runs a command inside the pod's netns, bounded by timeout, and
// returns its standard output and standard error.
func (p *pod) exec(timeout time.Duration, argv ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.NetnsName}, argv...)...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), p.Name, err,
			lastLines(errb.String()+out.String(), 5))
	}
	return out.String(), errb.String(), nil
}

// background starts a long-running command inside the pod's netns; it is
// killed (by PID) when the benchmark ends. `ip netns exec` execs the
// command itself, so the PID is the server's.
func (p *pod) background(b testing.TB, argv ...string) {
	b.Helper()
	c := exec.Command("ip", append([]string{"netns", "exec", p.NetnsName}, argv...)...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		b.Fatalf("starting %s in %s: %v", strings.Join(argv, " "), p.Name, err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	b.Cleanup(func() {
		c.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			b.Errorf("%s (pid %d) did not exit after SIGKILL", argv[0], c.Process.Pid)
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---- statistics ------------------------------------------------------

// printResults prints a benchmark's table to standard output: b.Log would
// do, but go test cuts a benchmark's log after ten lines.
func printResults(b *testing.B, table string) {
	fmt.Printf("\n--- %s\n%s\n\n", b.Name(), strings.TrimRight(table, "\n"))
}

// percentile is the nearest-rank percentile q (0..100) of xs.
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(q / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// median is the middle value (the mean of the two middle ones for an
// even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
