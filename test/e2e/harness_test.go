package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
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
	bins.Need(t, e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CnitoolBin)
}

// ---- the agent -------------------------------------------------------

// agent is a membrane-agent of the test's own (e2eutil.Agent: paths, pod
// CIDRs, client, Stop and Restart) with what this suite asks of it.
type agent struct {
	*e2eutil.Agent
	t *testing.T
}

type agentOpts struct {
	// Bits is the pod CIDR's prefix length (default 24).
	Bits int
	// DualStack gives the agent an IPv6 pod CIDR too.
	DualStack bool
	Extra     []string
	// BPFRoot is the agent's bpffs directory; "" is a fresh one named
	// after the test (two agents of one test need their own).
	BPFRoot string
}

// startAgent runs membrane-agent on temporary paths (socket, state dir,
// bpffs dir, a free pod CIDR in 10.210.0.0-10.249.255.255) and waits until
// it answers /v1/healthz. It is stopped (by PID) when the test ends.
//
// MEMBRANE_E2E_HOST_ROUTING=legacy runs it with --host-routing=legacy
// (make test runs the policy suites a second time so; the default, auto,
// is bpf on the kernels CI runs); a test's own --host-routing in Extra
// wins.
func startAgent(t *testing.T, o agentOpts) *agent {
	t.Helper()
	var extra []string
	if hr := os.Getenv("MEMBRANE_E2E_HOST_ROUTING"); hr != "" {
		extra = append(extra, "--host-routing", hr)
	}
	return &agent{t: t, Agent: e2eutil.StartAgent(t, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		TempPattern: "mbe2e",
		Pool:        e2eutil.PoolE2E,
		Bits:        o.Bits,
		DualStack:   o.DualStack,
		Extra:       append(extra, o.Extra...),
		BPFRoot:     o.BPFRoot,
		KeepLogsEnv: "MEMBRANE_E2E_KEEP_LOGS",
	})}
}

// ctxT bounds an API call; it is cancelled when the test ends.
var ctxT = e2eutil.Context

// putPod registers pod labels through the API.
func (a *agent) putPod(ns, name string, labels map[string]string) {
	a.t.Helper()
	a.PutPod(models.Pod{Namespace: ns, Name: name, Labels: labels})
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
	var ips []string
	for _, r := range a.IPs() {
		if r.Owner == att.Owner() {
			ips = append(ips, r.IP)
		}
	}
	return ips
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
	// NodeNetns, if set, is the network namespace (`ip netns` name) of
	// the node the agent runs in: cnitool runs there (nsenter --net), so
	// the host veths are made in the node's namespace.
	NodeNetns string
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
	entry := map[string]any{"type": "membrane-cni", "socket": a.Socket, "stateDir": a.StateDir}
	for k, v := range pluginConf {
		entry[k] = v
	}
	e2eutil.WriteConflist(t, n.Dir, n.Name, map[string]any{"cniVersion": cniVersion, "plugins": []any{entry}})
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
	return e2eutil.PodCNIArgs(p.Namespace, p.Name, p.ContainerID)
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
	p.ContainerID = e2eutil.CnitoolContainerID(p.Netns)
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
	c := exec.Command(bins.Cnitool, cmd, n.Name, p.Netns)
	if n.NodeNetns != "" {
		c = exec.Command("nsenter", "--net=/var/run/netns/"+n.NodeNetns, "--", bins.Cnitool, cmd, n.Name, p.Netns)
	}
	c.Env = append(os.Environ(),
		"CNI_PATH="+bins.PluginDir,
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
	entry := map[string]any{"cniVersion": "1.1.0", "name": n.Name, "type": "membrane-cni", "socket": n.agent.Socket, "stateDir": n.agent.StateDir}
	for k, v := range conf {
		entry[k] = v
	}
	stdin, _ := json.Marshal(entry)
	c := exec.Command(bins.Plugin)
	c.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netns,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+bins.PluginDir,
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
		e2eutil.Eventually(t, 10*time.Second, "ipcache entry of "+ip.String()+" removed", func() error {
			if id, ok := a.IPCache()[netip.PrefixFrom(ip, 32)]; ok {
				return fmt.Errorf("%s -> identity %d", ip, id)
			}
			return nil
		})
	}
}

// netipInvalid stands for "no address": assertGone skips the ipcache check.
var netipInvalid netip.Addr

// assertNoIdleIdentities: every cluster identity the agent still holds is
// used by an endpoint, i.e. nothing (a failed ADD, a DEL) left a reference.
// Release follows the endpoints table, so it is polled.
func assertNoIdleIdentities(t *testing.T, a *agent) {
	t.Helper()
	e2eutil.Eventually(t, 10*time.Second, "identities without endpoints are released", func() error {
		for id, n := range a.Identities() {
			if n == 0 {
				return fmt.Errorf("identity %d is held by no endpoint", id)
			}
		}
		return nil
	})
}
