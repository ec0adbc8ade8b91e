package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/delqueue"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// See harness_test.go for how these tests run.

func TestAddCheckDel(t *testing.T) {
	e := newEnv(t, agentOpts{})
	e.putPod("shop", "web")
	args := e.newPod("c0ffee", "K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop;K8S_POD_UID=u-1;IgnoreUnknown=1")
	att, podNS := attachment(args), args.Netns
	ip, router := e.first().String(), e.router().String()

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
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != ip+"/32" ||
		res.IPs[0].Gateway.String() != router || *res.IPs[0].Interface != 1 {
		t.Fatalf("ips: %s, want %s/32 via %s", mustJSON(res.IPs), ip, router)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != router {
		t.Fatalf("routes: %s", mustJSON(res.Routes))
	}

	// What the agent made of it: a ready endpoint on the host veth, with
	// everything the plugin told it, and the address recorded as the
	// attachment's.
	host, err := e.hostLink(att.HostVeth())
	if err != nil {
		t.Fatal(err)
	}
	ep := e.endpoint(att)
	if ep == nil {
		t.Fatal("the agent has no endpoint for the attachment")
	}
	got := models.Endpoint{
		State: ep.State, ContainerID: ep.ContainerID, ContainerInterfaceName: ep.ContainerInterfaceName,
		InterfaceName: ep.InterfaceName, InterfaceIndex: ep.InterfaceIndex, Mac: ep.Mac, HostMac: ep.HostMac,
		NetworkNamespace: ep.NetworkNamespace, K8sNamespace: ep.K8sNamespace, K8sPodName: ep.K8sPodName,
		K8sUID: ep.K8sUID, Addressing: ep.Addressing,
	}
	want := models.Endpoint{
		State: models.StateReady, ContainerID: "c0ffee", ContainerInterfaceName: "eth0",
		InterfaceName: att.HostVeth(), InterfaceIndex: host.Attrs().Index,
		Mac: res.Interfaces[1].Mac, HostMac: host.Attrs().HardwareAddr.String(),
		NetworkNamespace: podNS, K8sNamespace: "shop", K8sPodName: "web", K8sUID: "u-1",
		Addressing: models.AddressPair{IPv4: ip},
	}
	if mustJSON(got) != mustJSON(want) {
		t.Fatalf("endpoint:\n got %s\nwant %s", mustJSON(got), mustJSON(want))
	}
	allocs := e.agent.IPs()
	if len(allocs) != 1 || allocs[0].IP != ip || allocs[0].Owner != "c0ffee:eth0" || allocs[0].Pod != "shop/web" {
		t.Fatalf("IPAM allocations: %s", mustJSON(allocs))
	}
	// Ready means the agent, in the same namespace, put its programs on
	// the veth; in its default attach mode (tc) they show as filters.
	filters, _ := exec.Command("tc", "-n", nsName(e.host), "filter", "show", "dev", att.HostVeth(), "ingress").CombinedOutput()
	if !strings.Contains(string(filters), "bpf") {
		t.Errorf("no BPF program on %s's ingress:\n%s", att.HostVeth(), filters)
	}

	// What the kernel has, as a user sees it.
	if host.Attrs().MTU != 1400 || host.Attrs().Alias != "membrane-cni c0ffee:eth0" {
		t.Errorf("host veth mtu %d alias %q", host.Attrs().MTU, host.Attrs().Alias)
	}
	podRoutes, _ := exec.Command("ip", "-n", nsName(podNS), "route").CombinedOutput()
	for _, want := range []string{"default via " + router + " dev eth0", router + " dev eth0 scope link"} {
		if !strings.Contains(string(podRoutes), want) {
			t.Errorf("pod routes lack %q:\n%s", want, podRoutes)
		}
	}
	neigh, _ := exec.Command("ip", "-n", nsName(podNS), "neigh", "show", router).CombinedOutput()
	if !strings.Contains(string(neigh), host.Attrs().HardwareAddr.String()) || !strings.Contains(string(neigh), "PERMANENT") {
		t.Errorf("router neighbour: %s", neigh)
	}
	hostRoutes, _ := exec.Command("ip", "-n", nsName(e.host), "route").CombinedOutput()
	if !strings.Contains(string(hostRoutes), ip+" dev "+att.HostVeth()+" scope link") {
		t.Errorf("host routes lack the pod:\n%s", hostRoutes)
	}
	fwd, _ := exec.Command("ip", "netns", "exec", nsName(e.host), "sysctl", "-n", "net.ipv4.ip_forward").CombinedOutput()
	if strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %s", fwd)
	}
	if err := ping(podNS, router); err != nil {
		t.Error(err)
	}

	if err := e.check(args, res); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}

	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(args)
	e.requireAgentHolds(0, 0)
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

// CHECK reports what changed since ADD: the endpoint gone from the agent,
// a route gone from the pod, the host veth down. (An endpoint that is not
// ready is TestEndpointDrift's: the real agent cannot be held there.)
func TestCheckNoticesDrift(t *testing.T) {
	e := newEnv(t, agentOpts{})
	e.putPod("default", "web")
	args := e.newPod("drift", "K8S_POD_NAME=web")
	att := attachment(args)
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.check(args, res); err != nil {
		t.Fatal(err)
	}
	// An operator removes the endpoint (`membrane endpoint delete`).
	if err := e.agent.Client.DeleteEndpoint(e2eutil.Context(t), att.EndpointID()); err != nil {
		t.Fatal(err)
	}
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "the agent has no endpoint for this attachment") {
		t.Errorf("CHECK with the endpoint deleted: %v", err)
	}
	exec.Command("ip", "-n", nsName(args.Netns), "route", "del", "default").Run()
	want := fmt.Sprintf("route 0.0.0.0/0 via %s is missing", e.router())
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CHECK without default route: %v", err)
	}
	exec.Command("ip", "-n", nsName(e.host), "link", "set", att.HostVeth(), "down").Run()
	if err := e.check(args, res); err == nil || !strings.Contains(err.Error(), "is down") {
		t.Errorf("CHECK with host veth down: %v", err)
	}
}

// The agent still has an endpoint for the attachment (its veth was deleted
// behind the runtime's back): the agent answers 409, the new veth and
// address go, the stale endpoint stays for DEL to remove.
func TestAddStaleEndpoint(t *testing.T) {
	e := newEnv(t, agentOpts{})
	e.putPod("default", "web")
	args := e.newPod("stale", "K8S_POD_NAME=web")
	att := attachment(args)
	if _, err := e.add(args); err != nil {
		t.Fatal(err)
	}
	stale := e.endpoint(att)
	if out, err := exec.Command("ip", "-n", nsName(e.host), "link", "del", att.HostVeth()).CombinedOutput(); err != nil {
		t.Fatalf("deleting the host veth: %v: %s", err, out)
	}

	_, err := e.add(args)
	requireAddFails(t, err, "default/web", "already has an endpoint for this attachment", types.ErrInternal)
	if !strings.Contains(err.Error(), "membrane endpoint delete "+att.EndpointID()) {
		t.Errorf("error %q does not say how to remove the stale endpoint", err)
	}
	e.requireNoHostVeth(att)
	if ep := e.endpoint(att); ep == nil || ep.ID != stale.ID {
		t.Errorf("endpoint after the failed ADD: %+v, want the stale one (%d) untouched", ep, stale.ID)
	}
	if ips := e.ownedIPs(att); len(ips) != 1 || ips[0] != stale.Addressing.IPv4 {
		t.Errorf("addresses of %s: %v, want the stale endpoint's %s only", att.Owner(), ips, stale.Addressing.IPv4)
	}

	// What the error says to do works.
	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(args)
}

// An ADD of a pod the agent never hears of waits for the pod's labels until
// one of three bounds runs out; whichever it is, nothing is left behind and
// the error says what happened.
func TestAddPodNeverRegistered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		// addTimeout is ADD's own deadline (CmdAdd's AddTimeout if 0).
		addTimeout time.Duration
		want       string
		code       uint
	}{
		// --pod-metadata-timeout: the endpoint is invalid, the agent
		// removes it and answers 400.
		{"pod metadata timeout", []string{"--pod-metadata-timeout=200ms", "--sync-build-timeout=10m"}, 0,
			"pod default/web is not known to the agent", types.ErrInternal},
		// --sync-build-timeout: the agent removes its half-made endpoint
		// and answers 504; the runtime should retry.
		{"sync build timeout", []string{"--sync-build-timeout=1s", "--pod-metadata-timeout=1h"}, 0,
			"timed out building the endpoint", types.ErrTryAgainLater},
		// ADD's deadline: the plugin never hears whether the endpoint was
		// made, so the rollback looks for it on its veth and removes it
		// (the agent, seeing the request go, removes it too).
		{"ADD deadline", []string{"--sync-build-timeout=1h", "--pod-metadata-timeout=1h"}, 3 * time.Second,
			"did not answer in time", types.ErrTryAgainLater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, agentOpts{Extra: tc.flags})
			if tc.addTimeout == 0 {
				tc.addTimeout = AddTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.addTimeout)
			defer cancel()
			args := e.newPod("unknown", "K8S_POD_NAME=web")
			_, err := e.addCtx(ctx, args)
			requireAddFails(t, err, "default/web", tc.want, tc.code)
			e.requireClean(args)
			e.requireAgentHolds(0, 0)
		})
	}
}

// The endpoint API's rate limiter answers 429 (one request, then one per
// 1000 s): ADD retries a few times, then rolls back and tells the runtime
// to retry later.
func TestAddRateLimited(t *testing.T) {
	e := newEnv(t, agentOpts{Extra: []string{"--endpoint-api-rate=0.001", "--endpoint-api-burst=1"}})
	e.putPod("default", "first")
	e.putPod("default", "web")
	if _, err := e.add(e.newPod("first", "K8S_POD_NAME=first")); err != nil {
		t.Fatal(err)
	}
	args := e.newPod("limited", "K8S_POD_NAME=web")
	_, err := e.add(args)
	requireAddFails(t, err, "default/web", "rate limiting", types.ErrTryAgainLater)
	e.requireClean(args)
	e.requireAgentHolds(1, 1) // the first pod's
}

func TestAddNoAddressLeft(t *testing.T) {
	e := newEnv(t, agentOpts{Bits: 30}) // room for one pod
	if _, err := e.add(e.newPod("first", "")); err != nil {
		t.Fatal(err)
	}
	args := e.newPod("second", "K8S_POD_NAME=late")
	_, err := e.add(args)
	requireAddFails(t, err, "default/late", "no free address", types.ErrInternal)
	if !strings.Contains(err.Error(), "allocating an address") {
		t.Errorf("error %q does not name the step", err)
	}
	e.requireClean(args)
	e.requireAgentHolds(1, 1) // the first pod's
}

func TestAddAgentDown(t *testing.T) {
	e := newEnv(t, agentOpts{})
	e.agent.Stop()
	args := e.newPod("down", "K8S_POD_NAME=web")
	_, err := e.add(args)
	var ue *AgentUnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("ADD with the agent down: %v", err)
	}
	requireAddFails(t, err, "default/web", "membrane-agent not reachable at "+e.agent.Socket+": is it running?", types.ErrTryAgainLater)
	e.requireNoHostVeth(attachment(args))
}

// The agent goes away between ADD and DEL: the veth still goes, the DEL
// is queued in the agent's state dir and succeeds, and a second DEL (the
// runtime's retry or kubelet's double DEL) collapses into the same entry.
// The agent finishes the job when it starts, before it answers: the
// address (which it restored) is released and the queue is empty.
func TestDelAgentDown(t *testing.T) {
	e := newEnv(t, agentOpts{})
	args := e.newPod("deldown", "")
	att := attachment(args)
	if _, err := e.add(args); err != nil {
		t.Fatal(err)
	}
	e.agent.Stop()
	for i := range 2 {
		if err := e.del(args); err != nil {
			t.Fatalf("DEL %d with the agent down: %v", i+1, err)
		}
	}
	e.requireNoHostVeth(att)
	queue := filepath.Join(e.agent.StateDir, delqueue.DirName)
	if files, err := os.ReadDir(queue); err != nil || len(files) != 1 || files[0].Name() != delqueue.Name(att.ContainerID, att.IfName) {
		t.Fatalf("queue %s after two DELs: %v (%v), want one entry for %s", queue, files, err, att.Owner())
	}
	e.agent.Restart()
	e.requireClean(args)
	e.requireAgentHolds(0, 0)
	if files, err := os.ReadDir(queue); err != nil || len(files) != 0 {
		t.Fatalf("queue after the agent's start: %v (%v), want it empty", files, err)
	}
	if err := e.del(args); err != nil {
		t.Fatalf("DEL with the agent back, after the queued one: %v", err)
	}
}

// A DEL that cannot be queued fails as it did before the queue existed,
// naming the socket so that the runtime retries, and says why.
func TestDelAgentDownCannotQueue(t *testing.T) {
	e := newEnv(t, agentOpts{})
	args := e.newPod("nostate", "")
	e.agent.Stop()
	args.StdinData = fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"mbtest","type":"membrane-cni","socket":%q,"stateDir":%q}`,
		e.agent.Socket, filepath.Join(e.agent.Dir, "no-such-state-dir"))
	err := e.del(args)
	if err == nil || !strings.Contains(err.Error(), e.agent.Socket) || !strings.Contains(err.Error(), "could not be queued") {
		t.Fatalf("DEL with the agent down and no state dir: %v", err)
	}
	if CodeOf(err) != types.ErrTryAgainLater {
		t.Errorf("code %d, want %d (try again later)", CodeOf(err), types.ErrTryAgainLater)
	}
}

// ADD of an attachment that is set up already (the agent has its
// endpoint) fails on the veth and leaves the first one alone.
func TestAddDuplicateAttachment(t *testing.T) {
	e := newEnv(t, agentOpts{})
	e.putPod("default", "web")
	args := e.newPod("dup", "K8S_POD_NAME=web")
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.add(args)
	if !errors.Is(err, ErrHostVethExists) || !strings.Contains(err.Error(), "DEL it before adding it again") {
		t.Fatalf("second ADD: %v", err)
	}
	e.requireAgentHolds(1, 1)
	if err := e.check(args, res); err != nil {
		t.Errorf("first attachment damaged: %v", err)
	}
	if err := ping(args.Netns, e.router().String()); err != nil {
		t.Error(err)
	}
}

// A host veth without an endpoint is what an ADD left when it died
// half-way (the agent was killed mid-ADD): the runtime's retry of the ADD
// replaces it and succeeds.
func TestAddReplacesOrphanVeth(t *testing.T) {
	e := newEnv(t, agentOpts{})
	args := e.newPod("orphan", "")
	att := attachment(args)
	err := e.inHost(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = att.HostVeth()
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "orphanpeer"})
	})
	if err != nil {
		t.Fatalf("making the leftover veth: %v", err)
	}
	if _, err := e.add(args); err != nil {
		t.Fatalf("ADD over a leftover host veth: %v", err)
	}
	e.requireAgentHolds(1, 1)
	if _, err := e.hostLink("orphanpeer"); err == nil {
		t.Error("the leftover veth's other end is still there")
	}
	if err := ping(args.Netns, e.router().String()); err != nil {
		t.Error(err)
	}
}

func TestAddDualStack(t *testing.T) {
	e := newEnv(t, agentOpts{DualStack: true})
	args := e.newPod("ds", "")
	att, podNS := attachment(args), args.Netns
	res, err := e.add(args)
	if err != nil {
		t.Fatal(err)
	}
	router6 := e.agent.PodCIDRv6.Addr().Next()
	ip6 := router6.Next().String()
	if len(res.IPs) != 2 || res.IPs[1].Address.String() != ip6+"/128" || res.IPs[1].Gateway.String() != router6.String() ||
		len(res.Routes) != 2 || res.Routes[1].Dst.String() != "::/0" {
		t.Fatalf("result: %s, want %s/128 via %s", mustJSON(res), ip6, router6)
	}
	if ep := e.endpoint(att); ep == nil || ep.Addressing.IPv6 != ip6 || ep.K8sPodName != "" {
		t.Errorf("endpoint: %s", mustJSON(ep))
	}
	if err := ping(podNS, e.router().String()); err != nil {
		t.Error(err)
	}
	if err := ping(podNS, router6.String()); err != nil {
		t.Error(err)
	}
	if err := e.check(args, res); err != nil {
		t.Error(err)
	}
	if err := e.del(args); err != nil {
		t.Fatal(err)
	}
	e.requireClean(args)
	e.requireAgentHolds(0, 0)
}

// IPv6 needs an MTU of at least 1280; the plugin says so instead of
// letting the kernel silently disable IPv6 on the link.
func TestAddIPv6SmallMTU(t *testing.T) {
	e := newEnv(t, agentOpts{DualStack: true})
	args := e.newPod("smallmtu", "")
	args.StdinData = fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"mbtest","type":"membrane-cni","socket":%q,"mtu":1000}`, e.agent.Socket)
	_, err := e.add(args)
	if err == nil || !strings.Contains(err.Error(), `"mtu" 1000 is below IPv6's minimum of 1280`) {
		t.Fatalf("ADD with mtu 1000 and IPv6: %v", err)
	}
	if CodeOf(err) != types.ErrInvalidNetworkConfig {
		t.Errorf("code %d", CodeOf(err))
	}
	e.requireClean(args)
	e.requireAgentHolds(0, 0)
}

// Older configurations get results in their own version.
func TestAddOlderVersions(t *testing.T) {
	e := newEnv(t, agentOpts{})
	for i, v := range []string{"0.2.0", "0.3.1", "0.4.0", "1.0.0"} {
		args := e.newPod(fmt.Sprintf("v%d", i), "")
		args.StdinData = e.conf(v)
		var out []byte
		err := e.inHost(func() error {
			res, err := Add(e2eutil.Context(t), args)
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
		if res.Version() != v {
			t.Errorf("result version %s, want %s", res.Version(), v)
		}
		ip := e.endpoint(attachment(args)).Addressing.IPv4
		if !strings.Contains(string(out), `"`+ip+`/32"`) {
			t.Errorf("%s result lacks the address %s: %s", v, ip, out)
		}
		if err := e.del(args); err != nil {
			t.Fatal(err)
		}
	}
	e.requireAgentHolds(0, 0)
}

func TestGC(t *testing.T) {
	e := newEnv(t, agentOpts{})
	var all []*skel.CmdArgs
	for _, id := range []string{"keep", "drop1", "drop2"} {
		args := e.newPod(id, "")
		if _, err := e.add(args); err != nil {
			t.Fatal(err)
		}
		all = append(all, args)
	}
	// An address with no endpoint, as an ADD that died half-way leaves it,
	// and one whose owner is no attachment, which is not the plugin's.
	for _, owner := range []string{"crashed:eth0", "operator"} {
		if _, err := e.agent.Client.AllocateIP(e2eutil.Context(t), &models.IPAMRequest{Owner: owner}); err != nil {
			t.Fatalf("allocating an address for %s: %v", owner, err)
		}
	}

	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"mbtest","type":"membrane-cni","socket":%q,
	  "cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],
	  "cni.dev/attachments":[{"containerID":"keep","ifname":"eth0"}]}`, e.agent.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), GCTimeout)
	defer cancel()
	if err := e.inHost(func() error { return GC(ctx, &skel.CmdArgs{StdinData: []byte(conf)}) }); err != nil {
		t.Fatal(err)
	}
	if ep := e.endpoint(Attachment{ContainerID: "keep", IfName: "eth0"}); ep == nil {
		t.Error("GC removed the valid attachment's endpoint")
	}
	if _, err := e.hostLink(HostVethName("keep", "eth0")); err != nil {
		t.Error("GC removed the valid attachment's veth")
	}
	for _, id := range []string{"drop1", "drop2"} {
		if ep := e.endpoint(Attachment{ContainerID: id, IfName: "eth0"}); ep != nil {
			t.Errorf("endpoint of %s survived GC", id)
		}
		e.requireNoHostVeth(Attachment{ContainerID: id, IfName: "eth0"})
	}
	owners := map[string]int{}
	for _, a := range e.agent.IPs() {
		owners[a.Owner]++
	}
	if len(owners) != 2 || owners["keep:eth0"] != 1 || owners["operator"] != 1 {
		t.Errorf("addresses after GC belong to %v; want one of keep:eth0 and one of operator", owners)
	}
	if err := e.check(all[0], nil); err == nil || !strings.Contains(err.Error(), "no prevResult") {
		t.Errorf("CHECK without prevResult: %v", err)
	}
}

// STATUS: OK while the agent answers healthy, CNI error 50 naming the
// socket once it is gone. (An agent that answers unhealthy is
// TestStatusError's: the real one cannot be made to.)
func TestStatus(t *testing.T) {
	e := newEnv(t, agentOpts{})
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"membrane-cni","socket":%q}`, e.agent.Socket)
	status := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), StatusTimeout)
		defer cancel()
		return Status(ctx, &skel.CmdArgs{StdinData: conf})
	}
	if err := status(); err != nil {
		t.Fatal(err)
	}
	e.agent.Stop()
	err := status()
	if CodeOf(err) != ErrPluginNotAvailable || !strings.Contains(err.Error(), "not reachable at "+e.agent.Socket) {
		t.Errorf("STATUS without agent: code %d: %v", CodeOf(err), err)
	}
	// What skel prints for the runtime.
	var te *types.Error
	if !errors.As(toCNI(err), &te) || te.Code != 50 {
		t.Errorf("toCNI: %#v", toCNI(err))
	}
}
