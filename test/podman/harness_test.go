package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
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
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// setup gates a test: root (or a failure under CI), not -short, binaries
// and tools there.
func setup(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("podman suite: skipped with -short")
	}
	testutil.RequirePrivileged(t)
	needBinaries(t)
}

// ---- the agent -------------------------------------------------------

type agent struct {
	t       *testing.T
	Dir     string
	Socket  string
	BPFRoot string
	PodCIDR netip.Prefix
	Client  *client.Client

	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// startAgent runs membrane-agent on temporary paths with extra flags and
// waits until it answers /v1/healthz. It is stopped (by PID) when the test
// ends.
func startAgent(t *testing.T, extra ...string) *agent {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbpodman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &agent{
		t:       t,
		Dir:     dir,
		Socket:  filepath.Join(dir, "agent.sock"),
		BPFRoot: testutil.BPFDir(t),
		PodCIDR: freePodCIDR(t),
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
		t.Fatal(err)
	}
	a.cmd = exec.Command(bins.agent, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	err = a.cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatalf("starting membrane-agent: %v", err)
	}
	a.exited = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() || os.Getenv("MEMBRANE_PODMAN_KEEP_LOGS") == "1" {
			a.dumpLog()
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Healthz(ctx)
		cancel()
		if err == nil {
			return a
		}
		select {
		case <-a.exited:
			t.Fatalf("membrane-agent %s exited during start: %v", strings.Join(args, " "), a.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("membrane-agent did not answer on %s within 20s: %v", a.Socket, err)
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
		a.t.Errorf("membrane-agent (pid %d) ignored SIGTERM for 10s; killing it", a.cmd.Process.Pid)
		a.cmd.Process.Kill()
		<-a.exited
	}
}

func (a *agent) dumpLog() {
	raw, _ := os.ReadFile(a.logPath)
	var b []byte
	for line := range bytes.Lines(raw) {
		// Hive's start/stop bookkeeping says nothing about a failure.
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

// cli runs the membrane CLI against this agent.
func (a *agent) cli(args ...string) (string, error) {
	out, err := exec.Command(bins.cli, append([]string{"--socket", a.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("membrane %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// label registers labels for pod default/name the way a podman user does.
func (a *agent) label(name string, kv ...string) {
	a.t.Helper()
	if _, err := a.cli(append([]string{"pod", "label", name}, kv...)...); err != nil {
		a.t.Fatal(err)
	}
}

// endpoint is the endpoint of a container's eth0, or nil if there is none.
func (a *agent) endpoint(containerID string) *models.Endpoint {
	a.t.Helper()
	ep, err := a.Client.GetEndpoint(ctxT(a.t), "cni-attachment-id:"+containerID+":eth0")
	if client.IsStatus(err, http.StatusNotFound) {
		return nil
	}
	if err != nil {
		a.t.Fatalf("GET endpoint of container %s: %v", containerID, err)
	}
	return ep
}

// ownedIPs lists the addresses IPAM holds for a container's eth0.
func (a *agent) ownedIPs(containerID string) []string {
	a.t.Helper()
	rows, err := a.Client.ListIPs(ctxT(a.t))
	if err != nil {
		a.t.Fatalf("GET /v1/ipam: %v", err)
	}
	var ips []string
	for _, r := range rows {
		if r.Owner == containerID+":eth0" {
			ips = append(ips, r.IP)
		}
	}
	return ips
}

// identities maps each cluster identity (>= 256) the agent holds to the
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

// importPolicy PUTs a policy document and waits until every endpoint
// enforces that revision.
func (a *agent) importPolicy(doc string) {
	a.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := a.Client.DoRaw(ctxT(a.t), http.MethodPut, "/v1/policy", "application/json", []byte(doc), &out); err != nil {
		a.t.Fatalf("PUT /v1/policy: %v\n%s", err, doc)
	}
	a.waitRevision(out.Revision)
}

// deletePolicy removes every rule and waits until the endpoints know.
func (a *agent) deletePolicy() {
	a.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := a.Client.Do(ctxT(a.t), http.MethodDelete, "/v1/policy", map[string]any{}, &out); err != nil {
		a.t.Fatalf("DELETE /v1/policy: %v", err)
	}
	a.waitRevision(out.Revision)
}

func (a *agent) waitRevision(rev uint64) {
	a.t.Helper()
	eventually(a.t, 30*time.Second, fmt.Sprintf("endpoints to enforce policy revision %d", rev), func() error {
		eps, err := a.Client.ListEndpoints(ctxT(a.t))
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.State != models.StateReady || ep.PolicyRevision < rev {
				return fmt.Errorf("endpoint %d (%s) is %s at revision %d", ep.ID, ep.K8sPodName, ep.State, ep.PolicyRevision)
			}
		}
		return nil
	})
}

// eventually polls cond until it returns nil or the deadline passes. It is
// for state that converges, not a timing assertion: the bound only keeps a
// broken agent from hanging the suite.
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

// ---- pod CIDRs -------------------------------------------------------

var cidrMu sync.Mutex
var cidrsTaken = map[netip.Prefix]bool{}

// freePodCIDR picks 10.X.Y.0/24 with X in 210..249 that overlaps no route
// on this machine and no other test of this run, so concurrent suites
// (the end-to-end suite's agents, other runs) do not collide.
func freePodCIDR(t *testing.T) netip.Prefix {
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
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(210 + rand.IntN(40)), byte(rand.IntN(256)), 0}), 24)
		if !used(p) {
			cidrsTaken[p] = true
			return p
		}
	}
	t.Fatal("no free pod CIDR in 10.210.0.0-10.249.255.255")
	return netip.Prefix{}
}
