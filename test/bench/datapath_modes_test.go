package bench

import (
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// podPair is a client and a server endpoint connected one way (a mode).
// server.IP is where the client reaches the server; in loopback mode
// server and client are the same pod.
type podPair struct {
	mode           string
	optional       bool // a mode being built: skipped, not fatal, when it carries no traffic
	server, client *pod
	// hostIfindexes are the host veths whose programs the mode runs
	// (Membrane's modes), for profilePrograms.
	hostIfindexes []int
}

// datapathMode is one way to connect a client to a server.
type datapathMode struct {
	name string
	desc string
	// setup makes the pair. An error of a required mode fails the
	// benchmark; an optional mode (one needing an agent flag that is being
	// built) is skipped with the error printed instead.
	setup    func(b *testing.B) (*podPair, string, error)
	optional bool
}

// datapathModes are the modes in the order of the results table: the
// reference plugin, the two limits, then Membrane's.
var datapathModes = []datapathMode{
	{name: "ptp", desc: "reference CNI plugin ptp + host-local: a routed veth pair per pod, no programs", setup: ptpPair},
	{name: "veth", desc: "the limit: two network namespaces joined by one veth pair, addresses on it, no programs, no routing", setup: vethPair},
	{name: "loopback", desc: "the other limit: client and server in one network namespace over lo (MTU 65536)", setup: loopbackPair},
	{name: "membrane", desc: "membrane-cni, programs on the host veths (tc), agent with --host-routing=legacy: pod to pod through the host stack", setup: membranePair("--host-routing", "--host-routing=legacy")},
	{name: "membrane-hostrouting", desc: "membrane, agent with --host-routing=bpf (the default where the kernel has it)", setup: membranePair("--host-routing", "--host-routing=bpf"), optional: true},
	{name: "membrane-netkit", desc: "membrane, agent with --device-mode=netkit", setup: membranePair("--device-mode", "--device-mode=netkit"), optional: true},
}

// selectedModes are the modes MEMBRANE_BENCH_MODES names (comma-separated;
// all when unset). ptp and veth are always measured: the ratios need them.
func selectedModes(b *testing.B, only string) []datapathMode {
	if only == "" {
		return datapathModes
	}
	want := map[string]bool{"ptp": true, "veth": true}
	for _, n := range strings.Split(only, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var ms []datapathMode
	for _, m := range datapathModes {
		if want[m.name] {
			ms = append(ms, m)
			delete(want, m.name)
		}
	}
	for n := range want {
		b.Fatalf("MEMBRANE_BENCH_MODES: no mode %q (modes: ptp, veth, loopback, membrane, membrane-hostrouting, membrane-netkit)", n)
	}
	return ms
}

// addPods attaches a server and a client pod to n.
func addPods(n *network, server, client *pod) (*podPair, error) {
	for _, p := range []*pod{server, client} {
		if _, err := n.add(p); err != nil {
			return nil, err
		}
		if !p.IP.IsValid() {
			return nil, fmt.Errorf("%s: pod %s got no IPv4 address", n.Plugin, p.Name)
		}
	}
	return &podPair{server: server, client: client}, nil
}

func ptpPair(b *testing.B) (*podPair, string, error) {
	n := ptpNetwork(b)
	pp, err := addPods(n, newPod(b, "ptp-server"), newPod(b, "ptp-client"))
	return pp, "", err
}

// vethPair joins two fresh network namespaces by one veth pair (eth0 in
// each) with addresses of the benchmarking range 198.18.0.0/15 (RFC 2544);
// nothing leaves the two namespaces, and the pair dies with them.
func vethPair(b *testing.B) (*podPair, string, error) {
	server, client := newPod(b, "veth-server"), newPod(b, "veth-client")
	server.IP, client.IP = netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	cmds := [][]string{
		{"-n", server.NetnsName, "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "eth0", "netns", client.NetnsName},
		{"-n", server.NetnsName, "addr", "add", server.IP.String() + "/24", "dev", "eth0"},
		{"-n", client.NetnsName, "addr", "add", client.IP.String() + "/24", "dev", "eth0"},
		{"-n", server.NetnsName, "link", "set", "eth0", "up"},
		{"-n", client.NetnsName, "link", "set", "eth0", "up"},
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return &podPair{server: server, client: client}, "", nil
}

// loopbackPair is one namespace: the client reaches the server on
// 127.0.0.1.
func loopbackPair(b *testing.B) (*podPair, string, error) {
	p := newPod(b, "loopback")
	p.IP = netip.MustParseAddr("127.0.0.1")
	return &podPair{server: p, client: p}, "", nil
}

// membranePair is the setup of a Membrane mode: an agent of its own,
// started with args, two pods on it and the L4 allow policy (loadPolicy)
// selecting the server, verified to drop a port it does not allow. The
// second value says what the numbers were measured with. needFlag, if
// set, is a flag the agent must list in --help; an agent without it
// (built before the flag existed) skips the mode.
func membranePair(needFlag string, args ...string) func(b *testing.B) (*podPair, string, error) {
	return func(b *testing.B) (*podPair, string, error) {
		if needFlag != "" {
			has, err := agentHasFlag(needFlag)
			if err != nil {
				return nil, "", err
			}
			if !has {
				return nil, "", fmt.Errorf("agent has no %s flag (membrane-agent --help does not list it)", needFlag)
			}
		}
		a, err := tryStartAgent(b, args...)
		if err != nil {
			return nil, "", err
		}
		n := membraneNetwork(b, a)
		server, client := newPod(b, "membrane-server"), newPod(b, "membrane-client")
		a.putPod("default", server.Name, map[string]string{"app": "bench-server"})
		a.putPod("default", client.Name, map[string]string{"app": "bench-client"})
		pp, err := addPods(n, server, client)
		if err != nil {
			return nil, "", err
		}
		for _, ep := range a.Endpoints() {
			pp.hostIfindexes = append(pp.hostIfindexes, ep.InterfaceIndex)
		}
		return pp, loadPolicy(b, a, pp), nil
	}
}

var agentHelp struct {
	once sync.Once
	out  string
	err  error
}

// agentHasFlag reports whether `membrane-agent --help` lists flag.
func agentHasFlag(flag string) (bool, error) {
	agentHelp.once.Do(func() {
		out, err := exec.Command(bins.Agent, "--help").CombinedOutput()
		agentHelp.out, agentHelp.err = string(out), err
		if err != nil {
			agentHelp.err = fmt.Errorf("membrane-agent --help: %v: %s", err, out)
		}
	})
	if agentHelp.err != nil {
		return false, agentHelp.err
	}
	return helpListsFlag(agentHelp.out, flag), nil
}

// helpListsFlag reports whether a cobra --help output lists flag:
// "      --host-routing string   ..." (a flag whose name only starts with
// flag does not count, nor a mention in another flag's description).
func helpListsFlag(help, flag string) bool {
	return regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(flag) + `[ =\n]`).MatchString(help)
}
