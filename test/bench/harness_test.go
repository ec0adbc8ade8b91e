package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/testutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// setup gates a benchmark that runs real binaries: root (or a failure
// under CI), the binaries built, the reference plugins installed.
func setup(b *testing.B) {
	b.Helper()
	testutil.RequirePrivileged(b)
	if bins == nil {
		b.Fatal("binaries were not built (TestMain builds them only when -test.bench is set)")
	}
	bins.Need(b, e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CnitoolBin)
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(e2eutil.RefPluginDir, p)); err != nil {
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

// agent is a membrane-agent of the benchmark's own (e2eutil.Agent).
type agent struct {
	*e2eutil.Agent
	b testing.TB
}

// startAgent runs membrane-agent on temporary paths (socket, state dir,
// bpffs dir, a free pod CIDR in 10.160.0.0-10.199.255.255, apart from the
// e2e suite's range) and waits until it answers /v1/healthz. It is
// stopped, by its PID, when the benchmark ends.
func startAgent(b testing.TB, extra ...string) *agent {
	b.Helper()
	a, err := tryStartAgent(b, extra...)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// tryStartAgent is startAgent for an agent that may not start (a flag
// another version of the agent does not have): it returns why.
func tryStartAgent(b testing.TB, extra ...string) (*agent, error) {
	b.Helper()
	a := e2eutil.NewAgent(b, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		TempPattern: "mbbench",
		Pool:        e2eutil.PoolBench,
		Extra:       extra,
		ReadyWithin: 30 * time.Second,
	})
	b.Cleanup(func() {
		a.Stop()
		if b.Failed() {
			a.DumpLog()
		}
	})
	if err := a.Start(); err != nil {
		return nil, err
	}
	return &agent{b: b, Agent: a}, nil
}

func (a *agent) putPod(ns, name string, labels map[string]string) {
	a.b.Helper()
	a.PutPod(models.Pod{Namespace: ns, Name: name, Labels: labels})
}

// freePodCIDR picks a /24 in the benchmarks' range that no route on this
// machine and no other network of this run overlaps.
func freePodCIDR(b testing.TB) netip.Prefix {
	b.Helper()
	return e2eutil.FreePodCIDR(b, e2eutil.PoolBench, 24)
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
	e2eutil.WriteConflist(b, n.Dir, n.Name, conf)
	return n
}

// membraneNetwork is membrane-cni talking to agent a.
func membraneNetwork(b testing.TB, a *agent) *network {
	return writeNetwork(b, a.Dir, "membrane", bins.PluginDir, map[string]any{
		"cniVersion": "1.0.0",
		"plugins":    []any{map[string]any{"type": "membrane-cni", "socket": a.Socket, "stateDir": a.StateDir, "mtu": 1500}},
	})
}

// ptpNetwork is the reference: ptp with host-local IPAM on a free /24,
// state in a temporary directory.
func ptpNetwork(b testing.TB) *network {
	dir := b.TempDir()
	return writeNetwork(b, dir, "ptp", e2eutil.RefPluginDir,
		e2eutil.PTPConflist("", freePodCIDR(b), filepath.Join(dir, "ipam")))
}

// cnitool runs `cnitool CMD NET NETNS` the way a runtime would call the
// plugin and returns its output and wall time (process start to exit,
// cnitool's own start included, the same for both plugins).
func (n *network) cnitool(cmd string, p *pod) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bins.Cnitool, cmd, n.Name, p.Netns)
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
	// UID is the Pod object's UID, "" for a pod without one (uid-NAME).
	UID string
	IP  netip.Addr

	removed bool
}

// Args is the CNI_ARGS containerd passes.
func (p *pod) Args() string {
	if p.UID != "" {
		return e2eutil.PodCNIArgsUID(p.Namespace, p.Name, p.ContainerID, p.UID)
	}
	return e2eutil.PodCNIArgs(p.Namespace, p.Name, p.ContainerID)
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
	p.ContainerID = e2eutil.CnitoolContainerID(p.Netns)
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
			e2eutil.LastLines(errb.String()+out.String(), 5))
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

// ---- statistics ------------------------------------------------------

// printResults prints a benchmark's table to standard output: b.Log would
// do, but go test cuts a benchmark's log after ten lines.
func printResults(b *testing.B, table string) {
	fmt.Printf("\n--- %s\n%s\n\n", b.Name(), strings.TrimRight(table, "\n"))
}

// The statistics and the makespan, shared with the containerd suite's
// benchmark.
var (
	percentile = e2eutil.Percentile
	median     = e2eutil.Median
	ms         = e2eutil.Ms
	makespan   = e2eutil.Makespan[*pod]
)
