package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/testutil"
)

// These tests run the plugin's commands for real, inside two throwaway
// network namespaces: "host" plays the runtime's namespace (where the host
// veth, router address and host routes go), "pod" the sandbox. The agent is
// a fake (fakeagent_test.go) so that each failure can be provoked.

var nsCounter atomic.Int64

// newNetns makes a named netns (removed at cleanup) and returns its path.
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

type testEnv struct {
	t     *testing.T
	host  string
	agent *fakeAgent
}

func newEnv(t *testing.T, poolSize int, v6 bool) *testEnv {
	testutil.RequirePrivileged(t)
	return &testEnv{t: t, host: newNetns(t), agent: newFakeAgent(t, poolSize, v6)}
}

func (e *testEnv) conf(version string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":%q,"name":"mbtest","type":"membrane-cni","socket":%q,"mtu":1400}`,
		version, e.agent.Socket)
}

func (e *testEnv) args(cid, netns, cniArgs string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: cid, Netns: netns, IfName: "eth0", Args: cniArgs, StdinData: e.conf("1.1.0")}
}

// inHost runs fn with the calling thread in the "host" namespace.
func (e *testEnv) inHost(fn func() error) error {
	return ns.WithNetNSPath(e.host, func(ns.NetNS) error { return fn() })
}

func (e *testEnv) add(args *skel.CmdArgs) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() error {
		var err error
		res, err = Add(context.Background(), args)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (e *testEnv) del(args *skel.CmdArgs) error {
	return e.inHost(func() error { return Del(context.Background(), args) })
}

func (e *testEnv) check(args *skel.CmdArgs, prev *current.Result) error {
	c := *args
	var conf map[string]any
	json.Unmarshal(args.StdinData, &conf)
	raw, _ := json.Marshal(prev)
	var pr map[string]any
	json.Unmarshal(raw, &pr)
	conf["prevResult"] = pr
	c.StdinData, _ = json.Marshal(conf)
	return e.inHost(func() error { return Check(context.Background(), &c) })
}

// hostLink looks a link up in the "host" namespace.
func (e *testEnv) hostLink(name string) (netlink.Link, error) {
	var l netlink.Link
	err := e.inHost(func() error {
		var err error
		l, err = netlink.LinkByName(name)
		return err
	})
	return l, err
}

func (e *testEnv) requireNoHostVeth(att Attachment) {
	e.t.Helper()
	if _, err := e.hostLink(att.HostVeth()); err == nil {
		e.t.Errorf("host veth %s of %s is still there", att.HostVeth(), att.Owner())
	}
}

func (e *testEnv) requireClean(att Attachment, podNS string) {
	e.t.Helper()
	e.requireNoHostVeth(att)
	if out, err := exec.Command("ip", "-n", nsName(podNS), "link", "show", att.IfName).CombinedOutput(); err == nil {
		e.t.Errorf("%s still exists in the pod: %s", att.IfName, out)
	}
	if ips, eps := e.agent.counts(); ips != 0 || eps != 0 {
		e.t.Errorf("agent still holds %d addresses and %d endpoints", ips, eps)
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

func TestAddCheckDel(t *testing.T) {
	e := newEnv(t, 8, false)
	podNS := newNetns(t)
	args := e.args("c0ffee", podNS, "K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop;K8S_POD_UID=u-1;IgnoreUnknown=1")
	att := Attachment{ContainerID: "c0ffee", IfName: "eth0"}

	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	// The result: host veth, the pod's interface in its sandbox, one /32
	// on it with the router as gateway, a default route via the router.
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != att.HostVeth() ||
		res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != podNS {
		t.Fatalf("interfaces: %s", mustJSON(res.Interfaces))
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.99.0.2/32" ||
		res.IPs[0].Gateway.String() != "10.99.0.1" || *res.IPs[0].Interface != 1 {
		t.Fatalf("ips: %s", mustJSON(res.IPs))
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != "10.99.0.1" {
		t.Fatalf("routes: %s", mustJSON(res.Routes))
	}

	// What the agent was told.
	host, err := e.hostLink(att.HostVeth())
	if err != nil {
		t.Fatal(err)
	}
	req := e.agent.Requests[0]
	want := models.EndpointChangeRequest{
		ContainerID: "c0ffee", ContainerInterfaceName: "eth0",
		InterfaceName: att.HostVeth(), InterfaceIndex: int64(host.Attrs().Index),
		Mac: res.Interfaces[1].Mac, HostMac: host.Attrs().HardwareAddr.String(),
		Addressing:   &models.AddressPair{IPv4: "10.99.0.2"},
		K8sNamespace: "shop", K8sPodName: "web", K8sUID: "u-1",
		NetworkNamespace: podNS, SyncBuildEndpoint: true,
	}
	if mustJSON(req) != mustJSON(want) {
		t.Fatalf("endpoint request:\n got %s\nwant %s", mustJSON(req), mustJSON(want))
	}
	if alloc := e.agent.ips["10.99.0.2"]; alloc.Owner != "c0ffee:eth0" || alloc.Pod != "shop/web" {
		t.Fatalf("IPAM allocation: %+v", alloc)
	}

	// What the kernel has, as a user sees it.
	if host.Attrs().MTU != 1400 || host.Attrs().Alias != "membrane-cni c0ffee:eth0" {
		t.Errorf("host veth mtu %d alias %q", host.Attrs().MTU, host.Attrs().Alias)
	}
	podRoutes, _ := exec.Command("ip", "-n", nsName(podNS), "route").CombinedOutput()
	for _, want := range []string{"default via 10.99.0.1 dev eth0", "10.99.0.1 dev eth0 scope link"} {
		if !strings.Contains(string(podRoutes), want) {
			t.Errorf("pod routes lack %q:\n%s", want, podRoutes)
		}
	}
	neigh, _ := exec.Command("ip", "-n", nsName(podNS), "neigh", "show", "10.99.0.1").CombinedOutput()
	if !strings.Contains(string(neigh), host.Attrs().HardwareAddr.String()) || !strings.Contains(string(neigh), "PERMANENT") {
		t.Errorf("router neighbour: %s", neigh)
	}
	hostRoutes, _ := exec.Command("ip", "-n", nsName(e.host), "route").CombinedOutput()
	if !strings.Contains(string(hostRoutes), "10.99.0.2 dev "+att.HostVeth()+" scope link") {
		t.Errorf("host routes lack the pod:\n%s", hostRoutes)
	}
	fwd, _ := exec.Command("ip", "netns", "exec", nsName(e.host), "sysctl", "-n", "net.ipv4.ip_forward").CombinedOutput()
	if strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %s", fwd)
	}
	if err := ping(podNS, "10.99.0.1"); err != nil {
		t.Error(err)
	}

	if err := e.check(args, res); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}

	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(att, podNS)
	// DEL again, DEL without netns, DEL once the netns is gone: all fine.
	if err := e.del(args); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	noNS := *args
	noNS.Netns = ""
	if err := e.del(&noNS); err != nil {
		t.Errorf("DEL with empty CNI_NETNS: %v", err)
	}
	exec.Command("ip", "netns", "del", nsName(podNS)).Run()
	if err := e.del(args); err != nil {
		t.Errorf("DEL with the netns gone: %v", err)
	}
	unknown := e.args("never-added", "", "")
	if err := e.del(unknown); err != nil {
		t.Errorf("DEL of an unknown container: %v", err)
	}
}

func TestCheckNoticesDrift(t *testing.T) {
	e := newEnv(t, 8, false)
	podNS := newNetns(t)
	args := e.args("drift", podNS, "K8S_POD_NAME=web")
	att := Attachment{ContainerID: "drift", IfName: "eth0"}
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.check(args, res); err != nil {
		t.Fatal(err)
	}
	e.agent.setState(att, models.StateRegenerating)
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "regenerating, not ready") {
		t.Errorf("CHECK with endpoint regenerating: %v", err)
	}
	e.agent.setState(att, models.StateReady)
	exec.Command("ip", "-n", nsName(podNS), "route", "del", "default").Run()
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "route 0.0.0.0/0 via 10.99.0.1 is missing") {
		t.Errorf("CHECK without default route: %v", err)
	}
	exec.Command("ip", "-n", nsName(e.host), "link", "set", att.HostVeth(), "down").Run()
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "is down") {
		t.Errorf("CHECK with host veth down: %v", err)
	}
}

// Every way ADD can fail leaves nothing behind, and says why.
func TestAddRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		creates bool
		code    uint
		want    string
	}{
		{"duplicate", 409, false, types.ErrInternal, "already has an endpoint for this attachment"},
		{"invalid", 400, false, types.ErrInternal, "configured to fail with 400"},
		{"rate limited", 429, false, types.ErrTryAgainLater, "rate limiting"},
		{"sync build timeout", 504, false, types.ErrTryAgainLater, "timed out building the endpoint"},
		{"created then failed", 500, true, types.ErrInternal, "after creating endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 8, false)
			podNS := newNetns(t)
			e.agent.PutStatus, e.agent.PutCreates = tc.status, tc.creates
			args := e.args("rb", podNS, "K8S_POD_NAME=web")
			_, err := e.add(args)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "default/web") {
				t.Errorf("error %q should contain %q and name the pod", err, tc.want)
			}
			if CodeOf(err) != tc.code {
				t.Errorf("CNI code %d, want %d", CodeOf(err), tc.code)
			}
			e.requireClean(Attachment{ContainerID: "rb", IfName: "eth0"}, podNS)
		})
	}
}

func TestAddNoAddressLeft(t *testing.T) {
	e := newEnv(t, 1, false)
	first := e.args("first", newNetns(t), "")
	if _, err := e.add(first); err != nil {
		t.Fatal(err)
	}
	podNS := newNetns(t)
	_, err := e.add(e.args("second", podNS, "K8S_POD_NAME=late"))
	if err == nil || !strings.Contains(err.Error(), "no free address") || !strings.Contains(err.Error(), "allocating an address") {
		t.Fatalf("ADD with the pool exhausted: %v", err)
	}
	e.requireNoHostVeth(Attachment{ContainerID: "second", IfName: "eth0"})
	if ips, eps := e.agent.counts(); ips != 1 || eps != 1 {
		t.Errorf("agent holds %d addresses, %d endpoints; want the first pod's only", ips, eps)
	}
}

func TestAddAgentDown(t *testing.T) {
	e := newEnv(t, 8, false)
	e.agent.Stop()
	podNS := newNetns(t)
	_, err := e.add(e.args("down", podNS, "K8S_POD_NAME=web"))
	var ue *AgentUnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "membrane-agent not reachable at "+e.agent.Socket+": is it running?") {
		t.Fatalf("ADD with the agent down: %v", err)
	}
	if CodeOf(err) != types.ErrTryAgainLater {
		t.Errorf("code %d", CodeOf(err))
	}
	e.requireNoHostVeth(Attachment{ContainerID: "down", IfName: "eth0"})
}

// The agent goes away between ADD and DEL: the veth still goes, the error
// names the socket so the runtime retries, and the retry finishes the job.
func TestDelAgentDown(t *testing.T) {
	e := newEnv(t, 8, false)
	podNS := newNetns(t)
	args := e.args("deldown", podNS, "")
	if _, err := e.add(args); err != nil {
		t.Fatal(err)
	}
	e.agent.Stop()
	err := e.del(args)
	if err == nil || !strings.Contains(err.Error(), e.agent.Socket) {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	e.requireNoHostVeth(Attachment{ContainerID: "deldown", IfName: "eth0"})
	e.agent.start()
	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(Attachment{ContainerID: "deldown", IfName: "eth0"}, podNS)
}

func TestAddDuplicateAttachment(t *testing.T) {
	e := newEnv(t, 8, false)
	podNS := newNetns(t)
	args := e.args("dup", podNS, "K8S_POD_NAME=web")
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.add(args)
	if !errors.Is(err, ErrHostVethExists) || !strings.Contains(err.Error(), "DEL it before adding it again") {
		t.Fatalf("second ADD: %v", err)
	}
	// The first attachment is untouched.
	if ips, eps := e.agent.counts(); ips != 1 || eps != 1 {
		t.Errorf("agent holds %d addresses, %d endpoints; want 1 and 1", ips, eps)
	}
	if err := e.check(args, res); err != nil {
		t.Errorf("first attachment damaged: %v", err)
	}
	if err := ping(podNS, "10.99.0.1"); err != nil {
		t.Error(err)
	}
}

func TestAddDualStack(t *testing.T) {
	e := newEnv(t, 4, true)
	podNS := newNetns(t)
	args := e.args("ds", podNS, "")
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 2 || res.IPs[1].Address.String() != "fd99::2/128" || len(res.Routes) != 2 ||
		res.Routes[1].Dst.String() != "::/0" {
		t.Fatalf("result: %s", mustJSON(res))
	}
	if req := e.agent.Requests[0]; req.Addressing.IPv6 != "fd99::2" || req.K8sPodName != "" {
		t.Errorf("endpoint request: %s", mustJSON(req))
	}
	if err := ping(podNS, "10.99.0.1"); err != nil {
		t.Error(err)
	}
	if err := ping(podNS, "fd99::1"); err != nil {
		t.Error(err)
	}
	if err := e.check(args, res); err != nil {
		t.Error(err)
	}
	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(Attachment{ContainerID: "ds", IfName: "eth0"}, podNS)
}

// IPv6 needs an MTU of at least 1280; the plugin says so instead of
// letting the kernel silently disable IPv6 on the link.
func TestAddIPv6SmallMTU(t *testing.T) {
	e := newEnv(t, 4, true)
	podNS := newNetns(t)
	args := e.args("smallmtu", podNS, "")
	args.StdinData = fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"mbtest","type":"membrane-cni","socket":%q,"mtu":1000}`, e.agent.Socket)
	_, err := e.add(args)
	if err == nil || !strings.Contains(err.Error(), `"mtu" 1000 is below IPv6's minimum of 1280`) {
		t.Fatalf("ADD with mtu 1000 and IPv6: %v", err)
	}
	if CodeOf(err) != types.ErrInvalidNetworkConfig {
		t.Errorf("code %d", CodeOf(err))
	}
	e.requireClean(Attachment{ContainerID: "smallmtu", IfName: "eth0"}, podNS)
}

// Older configurations get results in their own version.
func TestAddOlderVersions(t *testing.T) {
	e := newEnv(t, 8, false)
	for i, v := range []string{"0.2.0", "0.3.1", "0.4.0", "1.0.0"} {
		podNS := newNetns(t)
		args := e.args(fmt.Sprintf("v%d", i), podNS, "")
		args.StdinData = e.conf(v)
		var out []byte
		err := e.inHost(func() error {
			res, err := Add(context.Background(), args)
			if err != nil {
				return err
			}
			out, err = json.Marshal(res)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		res, err := version.NewResult(v, out)
		if err != nil {
			t.Fatalf("%s: %v in %s", v, err, out)
		}
		if res.Version() != v && !(v == "0.3.1" && res.Version() == "0.3.1") {
			t.Errorf("result version %s, want %s", res.Version(), v)
		}
		if !strings.Contains(string(out), "10.99.0.") {
			t.Errorf("%s result lacks the address: %s", v, out)
		}
		if err := e.del(args); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGC(t *testing.T) {
	e := newEnv(t, 8, false)
	var all []*skel.CmdArgs
	for _, id := range []string{"keep", "drop1", "drop2"} {
		args := e.args(id, newNetns(t), "")
		if _, err := e.add(args); err != nil {
			t.Fatal(err)
		}
		all = append(all, args)
	}
	// An address with no endpoint: an ADD that died half-way.
	e.agent.mu.Lock()
	e.agent.ips["10.99.0.200"] = models.IPAMAllocation{IP: "10.99.0.200", Owner: "crashed:eth0"}
	e.agent.ips["10.99.0.201"] = models.IPAMAllocation{IP: "10.99.0.201", Owner: "router"}
	e.agent.mu.Unlock()

	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"mbtest","type":"membrane-cni","socket":%q,
	  "cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],
	  "cni.dev/attachments":[{"containerID":"keep","ifname":"eth0"}]}`, e.agent.Socket)
	err := e.inHost(func() error { return GC(context.Background(), &skel.CmdArgs{StdinData: []byte(conf)}) })
	if err != nil {
		t.Fatal(err)
	}
	if ep := e.agent.endpoint(Attachment{"keep", "eth0"}); ep == nil {
		t.Error("GC removed the valid attachment's endpoint")
	}
	if _, err := e.hostLink(HostVethName("keep", "eth0")); err != nil {
		t.Error("GC removed the valid attachment's veth")
	}
	for _, id := range []string{"drop1", "drop2"} {
		if ep := e.agent.endpoint(Attachment{id, "eth0"}); ep != nil {
			t.Errorf("endpoint of %s survived GC", id)
		}
		e.requireNoHostVeth(Attachment{id, "eth0"})
	}
	e.agent.mu.Lock()
	owners := map[string]bool{}
	for _, a := range e.agent.ips {
		owners[a.Owner] = true
	}
	e.agent.mu.Unlock()
	if len(owners) != 2 || !owners["keep:eth0"] || !owners["router"] {
		t.Errorf("addresses after GC belong to %v; want keep:eth0 and router", owners)
	}
	if err := e.check(all[0], nil); err == nil || !strings.Contains(err.Error(), "no prevResult") {
		t.Errorf("CHECK without prevResult: %v", err)
	}
}

func TestStatus(t *testing.T) {
	f := newFakeAgent(t, 1, false)
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"membrane-cni","socket":%q}`, f.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Status(ctx, &skel.CmdArgs{StdinData: conf}); err != nil {
		t.Fatal(err)
	}
	f.Unhealthy = "ipam: degraded"
	err := Status(ctx, &skel.CmdArgs{StdinData: conf})
	if CodeOf(err) != ErrPluginNotAvailable || !strings.Contains(err.Error(), "ipam: degraded") {
		t.Errorf("STATUS of an unhealthy agent: code %d: %v", CodeOf(err), err)
	}
	f.Stop()
	err = Status(ctx, &skel.CmdArgs{StdinData: conf})
	if CodeOf(err) != ErrPluginNotAvailable || !strings.Contains(err.Error(), "not reachable at "+f.Socket) {
		t.Errorf("STATUS without agent: code %d: %v", CodeOf(err), err)
	}
	// What skel prints for the runtime.
	var te *types.Error
	if !errors.As(toCNI(err), &te) || te.Code != 50 {
		t.Errorf("toCNI: %#v", toCNI(err))
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
