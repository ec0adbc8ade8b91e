// The tests of package plugin run the plugin's commands (Add, Check, Del,
// GC, Status, called in-process as skel calls them) against a real
// membrane-agent, which TestMain builds once.
//
// A test's env (newEnv) is a throwaway network namespace "host", playing
// the container runtime's namespace, and an agent of the test's own
// running inside it with the flags the test needs, on a temporary socket,
// state dir and bpffs dir. The commands run with the calling thread in
// "host" (env.inHost), so the host veths they make are in the agent's
// namespace and the agent attaches its BPF programs to them, as on a node.
// Each pod's sandbox is one more throwaway namespace (env.newPod). Pods
// are registered with the agent (env.putPod) before their ADD, as a pod
// watcher does; an ADD naming a pod the agent never hears of waits for its
// labels until --pod-metadata-timeout. An agent starts in a fraction of a
// second, so no two tests share one: each can check that the agent holds
// nothing it should not, and a failed test leaves nothing to the next.
//
// Failures are provoked for real: a pod CIDR with room for one pod, a pod
// the agent never hears of under short agent timeouts, rate-limit flags, a
// stopped agent. What the real agent cannot be made to answer (a 500, an
// unhealthy /v1/healthz, an endpoint caught while not ready) is covered by
// table tests of the pure functions that turn the agent's answers into CNI
// errors (errors_test.go).
//
// Everything is removed when a test ends, also when it fails: the agent is
// stopped by its PID (its log printed if the test failed, or always with
// MEMBRANE_CNI_KEEP_LOGS=1), then the namespaces and the veths in them are
// deleted. The tests need root: they skip without it, or fail under
// MEMBRANE_REQUIRE_PRIVILEGED=1; with -short they skip, as they build and
// run the agent. No test depends on how fast the machine is: the timeouts
// they provoke wait for a pod that never comes, and every other wait is
// bounded only to turn a hang into a failure.
package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/testutil"
)

// bins holds the membrane-agent TestMain built (when running as root).
var bins *e2eutil.Binaries

func TestMain(m *testing.M) {
	os.Exit(e2eutil.RunSuite(m, "mbcni-bin", func(dir string) {
		bins = e2eutil.Build(dir, "", e2eutil.AgentBin)
	}))
}

var nsCounter atomic.Int64

// newNetns makes a named netns with lo up, removed at cleanup (with the
// veths in it), and returns its path.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("mbt%d-%d", os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return "/var/run/netns/" + name
}

func nsName(path string) string { return path[strings.LastIndexByte(path, '/')+1:] }

type env struct {
	t     *testing.T
	host  string // path of the "host" netns
	agent *e2eutil.Agent
}

// agentOpts are what a test asks of its agent.
type agentOpts struct {
	Bits      int  // length of the pod CIDR (default 24)
	DualStack bool // an IPv6 pod CIDR too
	Extra     []string
}

// newEnv makes the "host" namespace and starts an agent in it.
func newEnv(t *testing.T, o agentOpts) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the real membrane-agent: skipped with -short")
	}
	testutil.RequirePrivileged(t)
	bins.Need(t, e2eutil.AgentBin)
	host := newNetns(t)
	a := e2eutil.StartAgent(t, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		TempPattern: "mbcni",
		Pool:        e2eutil.PoolPlugin,
		Bits:        o.Bits,
		DualStack:   o.DualStack,
		Extra:       o.Extra,
		Netns:       nsName(host),
		KeepLogsEnv: "MEMBRANE_CNI_KEEP_LOGS",
	})
	return &env{t: t, host: host, agent: a}
}

// router is the pods' gateway in the agent's IPv4 pod CIDR, first is the
// first address it hands out.
func (e *env) router() netip.Addr { return e.agent.PodCIDR.Addr().Next() }
func (e *env) first() netip.Addr  { return e.router().Next() }

func (e *env) conf(version string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":%q,"name":"mbtest","type":"membrane-cni","socket":%q,"stateDir":%q,"mtu":1400}`,
		version, e.agent.Socket, e.agent.StateDir)
}

func (e *env) args(cid, netns, cniArgs string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: cid, Netns: netns, IfName: "eth0", Args: cniArgs, StdinData: e.conf("1.1.0")}
}

// newPod makes container cid's sandbox (a netns) and returns what the
// runtime passes to attach it as eth0, with CNI_ARGS cniArgs.
func (e *env) newPod(cid, cniArgs string) *skel.CmdArgs {
	return e.args(cid, newNetns(e.t), cniArgs)
}

// attachment is the attachment args are for.
func attachment(args *skel.CmdArgs) Attachment {
	return Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
}

// putPod registers a pod with the agent, as a pod watcher does before the
// runtime asks for its network.
func (e *env) putPod(namespace, name string) {
	e.t.Helper()
	e.agent.PutPod(models.Pod{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}})
}

// inHost runs fn with the calling thread in the "host" namespace.
func (e *env) inHost(fn func() error) error {
	return ns.WithNetNSPath(e.host, func(ns.NetNS) error { return fn() })
}

// addCtx is ADD under a context of the caller's; add under the plugin's
// own deadline, as CmdAdd runs it.
func (e *env) addCtx(ctx context.Context, args *skel.CmdArgs) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() error {
		var err error
		res, err = Add(ctx, args)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (e *env) add(args *skel.CmdArgs) (*current.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), AddTimeout)
	defer cancel()
	return e.addCtx(ctx, args)
}

func (e *env) del(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), DelTimeout)
	defer cancel()
	return e.inHost(func() error { return Del(ctx, args) })
}

// check runs CHECK with prev as the prevResult.
func (e *env) check(args *skel.CmdArgs, prev *current.Result) error {
	c := *args
	var conf map[string]any
	json.Unmarshal(args.StdinData, &conf)
	raw, _ := json.Marshal(prev)
	var pr map[string]any
	json.Unmarshal(raw, &pr)
	conf["prevResult"] = pr
	c.StdinData, _ = json.Marshal(conf)
	ctx, cancel := context.WithTimeout(context.Background(), CheckTimeout)
	defer cancel()
	return e.inHost(func() error { return Check(ctx, &c) })
}

// hostLink looks a link up in the "host" namespace.
func (e *env) hostLink(name string) (netlink.Link, error) {
	var l netlink.Link
	err := e.inHost(func() error {
		var err error
		l, err = netlink.LinkByName(name)
		return err
	})
	return l, err
}

// endpoint is the agent's endpoint of att, or nil if it has none.
func (e *env) endpoint(att Attachment) *models.Endpoint {
	e.t.Helper()
	ep, err := e.agent.Client.GetEndpoint(e2eutil.Context(e.t), att.EndpointID())
	if client.IsStatus(err, 404) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("GET endpoint %s: %v", att.EndpointID(), err)
	}
	return ep
}

// ownedIPs lists the addresses the agent's IPAM holds for att.
func (e *env) ownedIPs(att Attachment) []string {
	var ips []string
	for _, r := range e.agent.IPs() {
		if r.Owner == att.Owner() {
			ips = append(ips, r.IP)
		}
	}
	return ips
}

// requireAgentHolds fails unless the agent holds exactly ips addresses and
// eps endpoints, whoever they belong to.
func (e *env) requireAgentHolds(ips, eps int) {
	e.t.Helper()
	gotIPs, gotEps := e.agent.IPs(), e.agent.Endpoints()
	if len(gotIPs) != ips || len(gotEps) != eps {
		e.t.Errorf("agent holds %d addresses and %d endpoints, want %d and %d:\n%s\n%s",
			len(gotIPs), len(gotEps), ips, eps, mustJSON(gotIPs), mustJSON(gotEps))
	}
}

func (e *env) requireNoHostVeth(att Attachment) {
	e.t.Helper()
	if _, err := e.hostLink(att.HostVeth()); err == nil {
		e.t.Errorf("host veth %s of %s is still there", att.HostVeth(), att.Owner())
	}
}

// requireClean fails if anything of the attachment args are for is left:
// its veth on either side, its endpoint or an address in the agent.
func (e *env) requireClean(args *skel.CmdArgs) {
	e.t.Helper()
	att := attachment(args)
	e.requireNoHostVeth(att)
	if out, err := exec.Command("ip", "-n", nsName(args.Netns), "link", "show", att.IfName).CombinedOutput(); err == nil {
		e.t.Errorf("%s still exists in the pod: %s", att.IfName, out)
	}
	if ep := e.endpoint(att); ep != nil {
		e.t.Errorf("the agent still has endpoint %d of %s", ep.ID, att.Owner())
	}
	if ips := e.ownedIPs(att); len(ips) > 0 {
		e.t.Errorf("the agent still holds %v for %s", ips, att.Owner())
	}
}

// ping sends at most three pings of at most a second each from netns.
func ping(netns, addr string) error {
	if _, err := exec.LookPath("ping"); err != nil {
		return fmt.Errorf("ping is not installed (Debian: apt-get install iputils-ping): %w", err)
	}
	var out []byte
	var err error
	for range 3 {
		out, err = exec.Command("ip", "netns", "exec", nsName(netns), "ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s from %s: %w: %s", addr, netns, err, out)
}

// requireAddFails checks a failed ADD's error: its text names the pod and
// says what went wrong, its CNI code tells the runtime whether to retry.
func requireAddFails(t *testing.T, err error, pod, want string, code uint) {
	t.Helper()
	if err == nil {
		t.Fatal("ADD succeeded")
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), pod) {
		t.Errorf("error %q should contain %q and name pod %s", err, want, pod)
	}
	if CodeOf(err) != code {
		t.Errorf("CNI code %d, want %d (%v)", CodeOf(err), code, err)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
