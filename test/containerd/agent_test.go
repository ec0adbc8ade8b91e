package containerd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// agent is membrane-agent on temporary paths (socket, state dir, bpffs
// dir, a free pod CIDR), writing its conflist into the CRI plugin's conf
// dir once it serves: the way a node installs it.
type agent struct {
	tb       testing.TB
	Socket   string
	BPFRoot  string
	PodCIDR  netip.Prefix
	Conflist string
	Client   *client.Client

	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// startAgent runs the agent and waits until it answers /v1/healthz. The
// caller stops it (the env does, after containerd).
func startAgent(tb testing.TB, dir, socket, bpfRoot, conflist string, extra ...string) (*agent, error) {
	a := &agent{
		tb:       tb,
		Socket:   socket,
		BPFRoot:  bpfRoot,
		PodCIDR:  freePodCIDR(tb),
		Conflist: conflist,
		logPath:  filepath.Join(dir, "agent.log"),
	}
	a.Client = client.New(a.Socket)
	a.args = append([]string{
		"--socket", a.Socket,
		"--state-dir", filepath.Join(dir, "agent-state"),
		"--bpf-root", a.BPFRoot,
		"--pod-cidr", a.PodCIDR.String(),
		"--write-cni-conf-when-ready", conflist,
	}, extra...)
	return a, a.start()
}

// start runs the agent with its arguments (again, after Stop: same
// socket, state and bpffs dirs, as systemd restarts it).
func (a *agent) start() error {
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	a.cmd = exec.Command(bins.agent, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	err = a.cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("starting membrane-agent: %w", err)
	}
	exited := make(chan struct{})
	a.exited = exited
	go func(cmd *exec.Cmd) { cmd.Wait(); close(exited) }(a.cmd)

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Healthz(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("membrane-agent %s exited during start: %v\n%s", strings.Join(a.args, " "), a.cmd.ProcessState, a.log(30))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("membrane-agent did not answer on %s within 30s: %v\n%s", a.Socket, err, a.log(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the agent by its PID: SIGTERM, SIGKILL after 10 s.
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
		a.tb.Errorf("membrane-agent (pid %d) ignored SIGTERM for 10s; killing it", a.cmd.Process.Pid)
		a.cmd.Process.Kill()
		<-a.exited
	}
}

func (a *agent) log(lines int) string {
	raw, _ := os.ReadFile(a.logPath)
	var keep []string
	for _, l := range strings.Split(string(raw), "\n") {
		// Hive's start/stop bookkeeping says nothing about a failure.
		if !strings.Contains(l, "msg=Invoked") && !strings.Contains(l, "hook executed") {
			keep = append(keep, l)
		}
	}
	return lastLines(strings.Join(keep, "\n"), lines)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// putPod registers a pod's labels, as a Kubernetes pod watcher would
// before kubelet asks the runtime for its sandbox.
func (a *agent) putPod(ns, name, uid string, labels map[string]string) {
	a.tb.Helper()
	if _, err := a.Client.PutPod(ctxT(a.tb), &models.Pod{Namespace: ns, Name: name, UID: uid, Labels: labels}); err != nil {
		a.tb.Fatalf("PUT /v1/pod/%s/%s: %v", ns, name, err)
	}
}

func (a *agent) endpoints() []models.Endpoint {
	a.tb.Helper()
	eps, err := a.Client.ListEndpoints(ctxT(a.tb))
	if err != nil {
		a.tb.Fatalf("GET /v1/endpoint: %v", err)
	}
	return eps
}

// endpointOf is the endpoint of a sandbox (its CNI container ID), or nil.
func (a *agent) endpointOf(sandboxID string) *models.Endpoint {
	a.tb.Helper()
	for _, ep := range a.endpoints() {
		if ep.ContainerID == sandboxID {
			return &ep
		}
	}
	return nil
}

func (a *agent) ips() []models.IPAMAllocation {
	a.tb.Helper()
	rows, err := a.Client.ListIPs(ctxT(a.tb))
	if err != nil {
		a.tb.Fatalf("GET /v1/ipam: %v", err)
	}
	return rows
}

// identities maps each cluster identity (>= 256) to its endpoint count.
func (a *agent) identities() map[uint32]int {
	a.tb.Helper()
	ids, err := a.Client.ListIdentities(ctxT(a.tb))
	if err != nil {
		a.tb.Fatalf("GET /v1/identity: %v", err)
	}
	out := map[uint32]int{}
	for _, id := range ids {
		if id.ID >= 256 {
			out[id.ID] = id.Endpoints
		}
	}
	return out
}

// ---- pod CIDRs -------------------------------------------------------

var (
	cidrMu     sync.Mutex
	cidrsTaken = map[netip.Prefix]bool{}
)

// freePodCIDR picks 10.X.Y.0/24 with X in 120..159 (apart from the e2e
// and bench ranges) that no route on this machine and no other agent of
// this run overlaps.
func freePodCIDR(tb testing.TB) netip.Prefix {
	tb.Helper()
	cidrMu.Lock()
	defer cidrMu.Unlock()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		tb.Fatalf("listing routes: %v", err)
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
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(120 + rand.IntN(40)), byte(rand.IntN(256)), 0}), 24)
		if !used(p) {
			cidrsTaken[p] = true
			return p
		}
	}
	tb.Fatal("no free pod CIDR in 10.120.0.0-10.159.255.255")
	return netip.Prefix{}
}
