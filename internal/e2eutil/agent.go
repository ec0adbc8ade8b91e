package e2eutil

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// AgentConfig says how to run a membrane-agent. Only Binary is required;
// the rest defaults to paths of the agent's own.
type AgentConfig struct {
	// Binary is the membrane-agent to run (Binaries.Agent).
	Binary string
	// Dir holds the socket, the state dir and the log. "" is a new
	// temporary directory named after TempPattern, removed when the test
	// ends. Keep it short: a unix socket path must stay below 108 bytes.
	Dir         string
	TempPattern string
	// Socket and StateDir default to Dir/agent.sock and Dir/state.
	Socket   string
	StateDir string
	// BPFRoot defaults to a fresh bpffs directory (testutil.BPFDir).
	BPFRoot string
	// Pool is where the pod CIDR is picked (FreePodCIDR), Bits its
	// length (default 24).
	Pool CIDRPool
	Bits int
	// DualStack gives the agent an IPv6 pod CIDR too.
	DualStack bool
	// Extra are more flags, after --socket, --state-dir, --bpf-root,
	// --pod-cidr and --pod-cidr-v6.
	Extra []string
	// ReadyWithin bounds the wait for /v1/healthz (default 20 s).
	ReadyWithin time.Duration
	// KeepLogsEnv names a variable that, set to 1, has StartAgent print
	// the log at cleanup even when the test passed.
	KeepLogsEnv string
	// Netns, if set, is the name of a network namespace (as `ip netns`
	// makes them, under /var/run/netns) the agent runs in, so that it
	// sees and attaches to the veths made there. It is entered with
	// `nsenter --net`, which changes nothing else: `ip netns exec` would
	// also remount /sys, hiding the bpffs that BPFRoot is on.
	Netns string
}

// Agent is a membrane-agent process on paths of its own.
type Agent struct {
	Dir       string
	Socket    string
	StateDir  string
	BPFRoot   string
	PodCIDR   netip.Prefix
	PodCIDRv6 netip.Prefix // set for a dual-stack agent
	Netns     string       // the network namespace it runs in ("": the test's)
	// Args are the flags it runs with, every time it starts.
	Args   []string
	Client *client.Client

	tb          testing.TB
	binary      string
	readyWithin time.Duration
	logPath     string
	cmd         *exec.Cmd
	exited      chan struct{}
}

// StartAgent runs membrane-agent as c says and waits until it answers
// /v1/healthz. When the test ends the agent is stopped, by its PID, and
// its log printed if the test failed (or c.KeepLogsEnv is 1).
func StartAgent(tb testing.TB, c AgentConfig) *Agent {
	tb.Helper()
	a := NewAgent(tb, c)
	tb.Cleanup(func() {
		a.Stop()
		if tb.Failed() || c.KeepLogsEnv != "" && os.Getenv(c.KeepLogsEnv) == "1" {
			a.DumpLog()
		}
	})
	if err := a.Start(); err != nil {
		tb.Fatal(err)
	}
	return a
}

// NewAgent prepares an agent's paths and flags (picking its pod CIDRs)
// without starting it, for a caller that starts and stops it itself.
func NewAgent(tb testing.TB, c AgentConfig) *Agent {
	tb.Helper()
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", c.TempPattern)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		c.Dir = dir
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.Dir, "agent.sock")
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(c.Dir, "state")
	}
	if c.BPFRoot == "" {
		c.BPFRoot = testutil.BPFDir(tb)
	}
	if c.Bits == 0 {
		c.Bits = 24
	}
	if c.ReadyWithin == 0 {
		c.ReadyWithin = 20 * time.Second
	}
	a := &Agent{
		Dir:         c.Dir,
		Socket:      c.Socket,
		StateDir:    c.StateDir,
		BPFRoot:     c.BPFRoot,
		Netns:       c.Netns,
		PodCIDR:     FreePodCIDR(tb, c.Pool, c.Bits),
		Client:      client.New(c.Socket),
		tb:          tb,
		binary:      c.Binary,
		readyWithin: c.ReadyWithin,
		logPath:     filepath.Join(c.Dir, "agent.log"),
	}
	a.Args = []string{
		"--socket", a.Socket,
		"--state-dir", a.StateDir,
		"--bpf-root", a.BPFRoot,
		"--pod-cidr", a.PodCIDR.String(),
	}
	if c.DualStack {
		a.PodCIDRv6 = FreePodCIDRv6(tb)
		a.Args = append(a.Args, "--pod-cidr-v6", a.PodCIDRv6.String())
	}
	a.Args = append(a.Args, c.Extra...)
	return a
}

// Start runs the agent and waits until it answers /v1/healthz. After
// Stop it starts it again with the same flags, socket, state and bpffs
// dirs, as systemd restarts it. The log is appended to.
func (a *Agent) Start() error {
	if a.running() {
		// A second process would find the first one answering on the
		// socket, look started, and leave the first one running past the
		// test.
		return fmt.Errorf("membrane-agent (pid %d) is running: stop it first", a.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(a.binary, a.Args...)
	if a.Netns != "" {
		// nsenter execs the agent: the PID stays the agent's.
		cmd = exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + a.Netns, "--", a.binary}, a.Args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("starting membrane-agent: %w", err)
	}
	exited := make(chan struct{})
	a.cmd, a.exited = cmd, exited
	go func() { cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(a.readyWithin)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Healthz(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("membrane-agent %s exited during start: %v\n%s", strings.Join(a.Args, " "), cmd.ProcessState, a.Log(30))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("membrane-agent did not answer on %s within %s: %v\n%s", a.Socket, a.readyWithin, err, a.Log(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart is Start after Stop (SIGTERM) for a test, when the agent is
// still running; it fails the test if the agent does not come back.
func (a *Agent) Restart() {
	a.tb.Helper()
	a.Stop()
	if err := a.Start(); err != nil {
		a.tb.Fatal(err)
	}
}

// Stop ends the agent by its PID: SIGTERM, SIGKILL after 10 s.
func (a *Agent) Stop() {
	if !a.running() {
		return
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

// PID is the agent process's ID (0 before it started), for reading its
// CPU and memory in /proc.
func (a *Agent) PID() int {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// running: the agent was started and has not exited.
func (a *Agent) running() bool {
	if a.cmd == nil || a.cmd.Process == nil {
		return false
	}
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// Kill ends the agent with SIGKILL by its PID, as a crash or the OOM
// killer does: no stop hook runs. It returns once the process has exited.
// Start brings it back on the same state.
func (a *Agent) Kill() {
	if !a.running() {
		return
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

// Log is the end of the agent's log: its last lines, without hive's
// start/stop bookkeeping (which says nothing about a failure).
func (a *Agent) Log(lines int) string {
	return LastLines(string(a.readLog()), lines)
}

// DumpLog prints the agent's log (its last 20,000 bytes, without hive's
// bookkeeping) to the test's log.
func (a *Agent) DumpLog() {
	b := a.readLog()
	if len(b) > 20000 {
		b = append([]byte("...\n"), b[len(b)-20000:]...)
	}
	a.tb.Logf("membrane-agent log (%s):\n%s", a.logPath, b)
}

func (a *Agent) readLog() []byte {
	raw, _ := os.ReadFile(a.logPath)
	var b []byte
	for line := range bytes.Lines(raw) {
		if !bytes.Contains(line, []byte("msg=Invoked")) && !bytes.Contains(line, []byte("hook executed")) {
			b = append(b, line...)
		}
	}
	return b
}

// ---- what the agent holds, through its API and pinned maps ------------

// PutPod registers a pod's labels, as a pod watcher does before the
// runtime asks for the pod's network.
func (a *Agent) PutPod(p models.Pod) {
	a.tb.Helper()
	if _, err := a.Client.PutPod(Context(a.tb), &p); err != nil {
		a.tb.Fatalf("PUT /v1/pod/%s/%s: %v", p.Namespace, p.Name, err)
	}
}

// Endpoints lists the agent's endpoints.
func (a *Agent) Endpoints() []models.Endpoint {
	a.tb.Helper()
	eps, err := a.Client.ListEndpoints(Context(a.tb))
	if err != nil {
		a.tb.Fatalf("GET /v1/endpoint: %v", err)
	}
	return eps
}

// IPs lists the addresses IPAM holds.
func (a *Agent) IPs() []models.IPAMAllocation {
	a.tb.Helper()
	rows, err := a.Client.ListIPs(Context(a.tb))
	if err != nil {
		a.tb.Fatalf("GET /v1/ipam: %v", err)
	}
	return rows
}

// Identities maps each cluster identity (>= 256) the agent holds to the
// number of endpoints using it.
func (a *Agent) Identities() map[uint32]int {
	a.tb.Helper()
	ids, err := a.Client.ListIdentities(Context(a.tb))
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

// IPCache reads the pinned ipcache map: prefix -> identity.
func (a *Agent) IPCache() map[netip.Prefix]uint32 {
	a.tb.Helper()
	m, err := maps.OpenPinned(a.BPFRoot, maps.IPCacheMapName)
	if err != nil {
		a.tb.Fatal(err)
	}
	defer m.Close()
	out := map[netip.Prefix]uint32{}
	var k maps.IPCacheKey
	var v maps.IPCacheValue
	it := m.Iterate()
	for it.Next(&k, &v) {
		p, err := k.Prefix()
		if err != nil {
			a.tb.Fatal(err)
		}
		out[p] = v.Identity
	}
	if err := it.Err(); err != nil {
		a.tb.Fatalf("iterating %s: %v", maps.IPCacheMapName, err)
	}
	return out
}
