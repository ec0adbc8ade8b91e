package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// The policy suites: pods made through membrane-cni in real netns, real
// TCP/UDP/ICMP between them, asserting what passes and what is dropped.
// They run for each attachment mode (tcx, legacy tc) and, in the dual-stack
// run, for IPv6 as well.

// policyEnv is one agent with the suite's pods.
type policyEnv struct {
	t      *testing.T
	a      *agent
	n      *network
	v6     bool
	web    *pod // app=web, serves 8080-8090 TCP/UDP
	client *pod // app=client
	other  *pod // app=other
	out    *outside
}

func (e *policyEnv) ip(p *pod) string {
	if e.v6 {
		return p.IPv6().String()
	}
	return p.IP().String()
}

// importPolicy PUTs a policy document and waits until every endpoint's
// datapath enforces that revision.
func (e *policyEnv) importPolicy(doc string) {
	e.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	if err := e.a.Client.DoRaw(ctxT(e.t), http.MethodPut, "/v1/policy", "application/json", []byte(doc), &out); err != nil {
		e.t.Fatalf("import policy: %v\n%s", err, doc)
	}
	e.waitRevision(out.Revision)
}

func (e *policyEnv) deleteAllPolicy() {
	e.t.Helper()
	var out struct {
		Revision uint64 `json:"revision"`
	}
	err := e.a.Client.Do(ctxT(e.t), http.MethodDelete, "/v1/policy", map[string]any{}, &out)
	if err != nil && !strings.Contains(err.Error(), "404") {
		e.t.Fatalf("delete policy: %v", err)
	}
	if err == nil {
		e.waitRevision(out.Revision)
	}
}

// tcpLoop is the tcp-loop tool running in a pod: one new connection after
// another to one address, until stopped.
type tcpLoop struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *strings.Builder
	cancel context.CancelFunc
}

func startTCPLoop(t *testing.T, from *pod, ip, port string) *tcpLoop {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), 60*time.Second)
	l := &tcpLoop{t: t, cmd: from.netns().Tool(ctx, "tcp-loop", net.JoinHostPort(ip, port)), out: &strings.Builder{}, cancel: cancel}
	l.cmd.Stdout, l.cmd.Stderr = l.out, l.out
	if err := l.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); l.cmd.Wait() })
	return l
}

// expectNoFailure stops the loop and fails the test unless it made
// connections and every one of them succeeded.
func (l *tcpLoop) expectNoFailure(during string) {
	l.t.Helper()
	l.cmd.Process.Signal(os.Interrupt)
	if err := l.cmd.Wait(); err != nil {
		l.t.Fatalf("tcp-loop: %v: %s", err, l.out.String())
	}
	summary := strings.TrimSpace(l.out.String())
	m := regexp.MustCompile(`attempts=(\d+) failed=(\d+)`).FindStringSubmatch(summary)
	if m == nil {
		l.t.Fatalf("no tcp-loop summary: %s", summary)
	}
	if m[2] != "0" || m[1] == "0" {
		l.t.Errorf("connections failed %s: %s", during, summary)
	}
	l.t.Logf("tcp-loop %s: %s", during, summary)
}

// waitRelabelled waits until p's endpoint is ready with an identity that
// carries the label k=v.
func (e *policyEnv) waitRelabelled(p *pod, k, v string) {
	e.t.Helper()
	e2eutil.Eventually(e.t, 30*time.Second, fmt.Sprintf("%s to be ready with %s=%s", p.Name, k, v), func() error {
		ep := e.a.endpoint(p.Attachment())
		if ep == nil {
			return fmt.Errorf("no endpoint")
		}
		if ep.State != models.StateReady || ep.Identity == nil || !slices.Contains(ep.Identity.Labels, "k8s:"+k+"="+v) {
			return fmt.Errorf("endpoint %d is %s with identity %+v", ep.ID, ep.State, ep.Identity)
		}
		return nil
	})
}

func (e *policyEnv) waitRevision(rev uint64) {
	e.t.Helper()
	e2eutil.Eventually(e.t, 30*time.Second, fmt.Sprintf("endpoints to enforce policy revision %d", rev), func() error {
		for _, ep := range e.a.Endpoints() {
			if ep.State != models.StateReady || ep.PolicyRevision < rev {
				return fmt.Errorf("endpoint %d (%s) is %s at revision %d", ep.ID, ep.K8sPodName, ep.State, ep.PolicyRevision)
			}
		}
		return nil
	})
}

// outside is a network namespace that is not a pod: a stand-in for the
// world, reached through the node's routing.
type outside struct {
	ns       string
	ip, ip2  string // two addresses, for CIDR except
	hostVeth string
}

func newOutside(t *testing.T, subnet int) *outside {
	t.Helper()
	o := &outside{
		ns:       fmt.Sprintf("mbe2e-out-%d-%d", os.Getpid(), subnet),
		ip:       fmt.Sprintf("198.51.%d.10", subnet),
		ip2:      fmt.Sprintf("198.51.%d.11", subnet),
		hostVeth: fmt.Sprintf("mbout%d", subnet),
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", o.ns).Run()
		exec.Command("ip", "link", "del", o.hostVeth).Run()
	})
	run("ip", "netns", "add", o.ns)
	run("ip", "link", "add", o.hostVeth, "type", "veth", "peer", "name", "out0", "netns", o.ns)
	run("ip", "addr", "add", fmt.Sprintf("198.51.%d.1/24", subnet), "dev", o.hostVeth)
	run("ip", "link", "set", o.hostVeth, "up")
	run("ip", "-n", o.ns, "addr", "add", o.ip+"/24", "dev", "out0")
	run("ip", "-n", o.ns, "addr", "add", o.ip2+"/24", "dev", "out0")
	run("ip", "-n", o.ns, "link", "set", "out0", "up")
	run("ip", "-n", o.ns, "link", "set", "lo", "up")
	run("ip", "-n", o.ns, "route", "add", "default", "via", fmt.Sprintf("198.51.%d.1", subnet))
	return o
}

// asPod lets the traffic helpers run in the outside namespace.
func (o *outside) asPod() *pod { return &pod{Name: "outside", NetnsName: o.ns} }

var outsideSubnet = 100

func setupPolicyEnv(t *testing.T, mode string, dualStack bool) *policyEnv {
	setup(t)
	a := startAgent(t, agentOpts{DualStack: dualStack, Extra: []string{"--datapath-mode", mode, "--allow-localhost", "policy"}})
	e := &policyEnv{t: t, a: a, n: newNetwork(t, a, "", nil)}
	mk := func(name, app string) *pod {
		a.putPod("default", name, map[string]string{"app": app})
		p := newPod(t, "default", name)
		if err := e.n.add(p); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		return p
	}
	e.web = mk("web", "web")
	e.client = mk("client", "client")
	e.other = mk("other", "other")
	startServer(t, e.web, "8080", "8085", "8090")
	outsideSubnet++
	e.out = newOutside(t, outsideSubnet)
	startServer(t, e.out.asPod(), "8080")
	return e
}

// expect asserts a set of connectivity facts, all at once so a failure
// lists everything that is wrong.
type fact struct {
	what string
	got  func() bool
	want bool
}

func (e *policyEnv) expect(facts ...fact) {
	e.t.Helper()
	for _, f := range facts {
		if got := f.got(); got != f.want {
			verb := "passed"
			if !got {
				verb = "was dropped"
			}
			e.t.Errorf("%s %s, want the opposite", f.what, verb)
		}
	}
}

func tcpFact(what string, from *pod, ip, port string, want bool) fact {
	return fact{what: "TCP " + what, got: func() bool { return canTCP(from, ip, port) }, want: want}
}

func udpFact(what string, from *pod, ip, port string, want bool) fact {
	return fact{what: "UDP " + what, got: func() bool { return canUDP(from, ip, port) }, want: want}
}

func pingFact(what string, from *pod, ip string, want bool) fact {
	return fact{what: "ICMP " + what, got: func() bool { return canPing(from, ip) }, want: want}
}

// hostTCP connects from the node itself (identity host).
func hostTCP(ip, port string) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 3)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "ok\n"
}

func TestPolicyTCX(t *testing.T) { runPolicySuite(t, "tcx", false) }
func TestPolicyTC(t *testing.T)  { runPolicySuite(t, "tc", false) }
func TestPolicyIPv6(t *testing.T) {
	runPolicySuite(t, "tcx", true)
}

func runPolicySuite(t *testing.T, mode string, v6 bool) {
	e := setupPolicyEnv(t, mode, v6)
	e.v6 = v6
	web, client, other := e.ip(e.web), e.ip(e.client), e.ip(e.other)
	// Each subtest starts without policy, even when the previous one
	// failed before deleting its own.
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			e.t = t
			t.Cleanup(e.deleteAllPolicy)
			fn(t)
		})
	}

	run("no policy allows everything", func(t *testing.T) {
		e.expect(
			tcpFact("client->web:8080", e.client, web, "8080", true),
			udpFact("other->web:8085", e.other, web, "8085", true),
			pingFact("client->other", e.client, other, true),
		)
	})

	run("ingress allow by labels and port", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
		              "toPorts":[{"ports":[{"port":"8080","protocol":"TCP"}]}]}]}]`)
		e.expect(
			tcpFact("client->web:8080 (allowed)", e.client, web, "8080", true),
			tcpFact("client->web:8085 (other port)", e.client, web, "8085", false),
			tcpFact("other->web:8080 (other identity)", e.other, web, "8080", false),
			udpFact("client->web:8080 (UDP not allowed)", e.client, web, "8080", false),
			pingFact("client->web (ICMP not allowed)", e.client, web, false),
			// web's egress is not enforced, and other is not selected.
			tcpFact("client->other:8080 has no server", e.client, other, "8080", false),
			pingFact("web->client (unselected direction)", e.web, client, true),
		)
		e.deleteAllPolicy()
		e.expect(tcpFact("other->web:8080 after delete", e.other, web, "8080", true))
	})

	run("egress rules and replies", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"client"}},
		  "egress":[{"toEndpoints":[{"matchLabels":{"app":"web"}}],
		             "toPorts":[{"ports":[{"port":"8085","protocol":"UDP"},{"port":"8080","protocol":"TCP"}]}]}]}]`)
		e.expect(
			tcpFact("client->web:8080 (reply must pass)", e.client, web, "8080", true),
			udpFact("client->web:8085 (request and reply)", e.client, web, "8085", true),
			udpFact("client->web:8090 (port not allowed)", e.client, web, "8090", false),
			pingFact("client->web (ICMP not allowed)", e.client, web, false),
			pingFact("client->other (not allowed)", e.client, other, false),
			// Unsolicited traffic to client is not restricted (ingress not
			// enforced), and web->client has no rule on web.
			pingFact("other->client (ingress not enforced)", e.other, client, true),
		)
		e.deleteAllPolicy()
	})

	run("deny beats allow", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEntities":["all"]}],
		  "ingressDeny":[{"fromEndpoints":[{"matchLabels":{"app":"other"}}],
		                  "toPorts":[{"ports":[{"port":"8080","protocol":"TCP"}]}]}]}]`)
		e.expect(
			tcpFact("client->web:8080 (allowed by all)", e.client, web, "8080", true),
			tcpFact("other->web:8080 (denied)", e.other, web, "8080", false),
			tcpFact("other->web:8085 (deny is 8080 only)", e.other, web, "8085", true),
		)
		e.deleteAllPolicy()
	})

	run("endPort range", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
		              "toPorts":[{"ports":[{"port":"8080","endPort":8085,"protocol":"TCP"}]}]}]}]`)
		e.expect(
			tcpFact("client->web:8080", e.client, web, "8080", true),
			tcpFact("client->web:8085", e.client, web, "8085", true),
			tcpFact("client->web:8090 (outside range)", e.client, web, "8090", false),
		)
		e.deleteAllPolicy()
	})

	run("ICMP rule", func(t *testing.T) {
		typ := "8"
		family := "IPv4"
		if v6 {
			typ, family = "128", "IPv6"
		}
		e.importPolicy(fmt.Sprintf(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
		              "icmps":[{"fields":[{"type":%s,"family":"%s"}]}]}]}]`, typ, family))
		e.expect(
			pingFact("client->web (echo allowed)", e.client, web, true),
			pingFact("other->web", e.other, web, false),
			tcpFact("client->web:8080 (only ICMP allowed)", e.client, web, "8080", false),
		)
		e.deleteAllPolicy()
	})

	run("policy while pods run, new pod matching a selector", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}]`)
		// A new client pod is allowed from its first packet: ADD returns
		// only when its identity is in every map that matters.
		e.a.putPod("default", "client2", map[string]string{"app": "client"})
		p := newPod(t, "default", "client2")
		if err := e.n.add(p); err != nil {
			t.Fatal(err)
		}
		e.expect(
			tcpFact("new client2->web:8080 on its first try", p, web, "8080", true),
			tcpFact("other->web:8080", e.other, web, "8080", false),
		)
		// Relabelling other to client changes what it may reach.
		e.a.putPod("default", "other", map[string]string{"app": "client"})
		e2eutil.Eventually(t, 20*time.Second, "other to reach web after relabel", func() error {
			if !canTCP(e.other, web, "8080") {
				return fmt.Errorf("still dropped")
			}
			return nil
		})
		e.a.putPod("default", "other", map[string]string{"app": "other"})
		e2eutil.Eventually(t, 20*time.Second, "other to be dropped again after relabel back", func() error {
			if canTCP(e.other, web, "8080") {
				return fmt.Errorf("still allowed")
			}
			return nil
		})
		e.deleteAllPolicy()
		if err := e.n.del(p); err != nil {
			t.Fatal(err)
		}
	})

	run("relabel between allowed labels drops nothing", func(t *testing.T) {
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}]`)
		e.a.putPod("default", "other", map[string]string{"app": "client", "rev": "0"})
		e.waitRelabelled(e.other, "rev", "0")
		// New TCP connections, one after another, while other moves through
		// identities that web allows: each move swaps the identity its
		// address carries, and not one connection may be judged by an
		// identity web's map lacks. (Each is a new flow: an established one
		// would pass on conntrack whatever the identity.)
		loop := startTCPLoop(t, e.other, web, "8080")
		time.Sleep(200 * time.Millisecond)
		for i := 1; i <= 4; i++ {
			rev := strconv.Itoa(i)
			e.a.putPod("default", "other", map[string]string{"app": "client", "rev": rev})
			e.waitRelabelled(e.other, "rev", rev)
			time.Sleep(100 * time.Millisecond)
		}
		loop.expectNoFailure("while relabelling")
		e.a.putPod("default", "other", map[string]string{"app": "other"})
		e.waitRelabelled(e.other, "app", "other")
		e.deleteAllPolicy()
	})

	run("spoofed source is dropped", func(t *testing.T) {
		spoof, prefix := "", "32"
		if v6 {
			spoof, prefix = e.a.PodCIDRv6.Addr().Next().Next().Next().Next().Next().Next().Next().Next().String(), "128"
		} else {
			spoof = e.a.PodCIDR.Addr().Next().Next().Next().Next().Next().Next().Next().Next().Next().String()
		}
		args := []string{"netns", "exec", e.client.NetnsName, "ip", "addr", "add", spoof + "/" + prefix, "dev", "eth0"}
		if v6 {
			args = append(args, "nodad")
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("add spoof address: %v: %s", err, out)
		}
		defer exec.Command("ip", "netns", "exec", e.client.NetnsName, "ip", "addr", "del", spoof+"/"+prefix, "dev", "eth0").Run()
		e.expect(
			fact{what: "TCP client->web:8080 from a spoofed source", got: func() bool { return canTCPFrom(e.client, spoof, web, "8080") }, want: false},
			tcpFact("client->web:8080 from its own address", e.client, web, "8080", true),
		)
	})

	if v6 {
		return // the outside namespace and the host checks are IPv4
	}

	run("entities host and world, CIDR with except", func(t *testing.T) {
		e.expect(
			fact{what: "TCP host->web:8080 without policy", got: func() bool { return hostTCP(web, "8080") }, want: true},
			tcpFact("outside->web:8080 without policy", e.out.asPod(), web, "8080", true),
		)
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEntities":["host"]}]}]`)
		e.expect(
			fact{what: "TCP host->web:8080 (host allowed)", got: func() bool { return hostTCP(web, "8080") }, want: true},
			tcpFact("outside->web:8080 (world not allowed)", e.out.asPod(), web, "8080", false),
			tcpFact("client->web:8080 (cluster not allowed)", e.client, web, "8080", false),
		)
		e.deleteAllPolicy()
		e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEntities":["world"]}]}]`)
		e.expect(
			tcpFact("outside->web:8080 (world allowed)", e.out.asPod(), web, "8080", true),
			fact{what: "TCP host->web:8080 (host is not world)", got: func() bool { return hostTCP(web, "8080") }, want: false},
			tcpFact("client->web:8080 (pods are not world)", e.client, web, "8080", false),
		)
		e.deleteAllPolicy()
		subnet := netip.PrefixFrom(netip.MustParseAddr(e.out.ip), 24).Masked()
		e.importPolicy(fmt.Sprintf(`[{"endpointSelector":{"matchLabels":{"app":"client"}},
		  "egress":[{"toCIDRSet":[{"cidr":"%s","except":["%s/32"]}]}]}]`, subnet, e.out.ip2))
		e.expect(
			tcpFact("client->outside:8080 (CIDR allowed)", e.client, e.out.ip, "8080", true),
			tcpFact("client->outside second address (except)", e.client, e.out.ip2, "8080", false),
			tcpFact("client->web:8080 (not in CIDR)", e.client, web, "8080", false),
		)
		e.deleteAllPolicy()
	})
}

// testRestartKeepsPolicy: the datapath keeps enforcing while the agent is
// down and while it restarts; the endpoint's pinned entry never loses its
// enforcement flags, not even for a moment.
func TestRestartKeepsPolicyTCX(t *testing.T) { testRestartKeepsPolicy(t, "tcx") }
func TestRestartKeepsPolicyTC(t *testing.T)  { testRestartKeepsPolicy(t, "tc") }

func testRestartKeepsPolicy(t *testing.T, mode string) {
	e := setupPolicyEnv(t, mode, false)
	web := e.ip(e.web)
	// A CIDR rule imported first and deleted later leaves a hole in the
	// CIDR identity numbers: a restarted agent that numbered afresh would
	// give the outside subnet another identity than the pinned ipcache
	// (and the policy map) hold.
	e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"other"}},
	  "egress":[{"toCIDR":["203.0.113.0/24"]}], "labels":[{"key":"name","value":"decoy"}]}]`)
	subnet := netip.PrefixFrom(netip.MustParseAddr(e.out.ip), 24).Masked()
	e.importPolicy(fmt.Sprintf(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
	  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]},
	 {"endpointSelector":{"matchLabels":{"app":"client"}},
	  "egress":[{"toEndpoints":[{"matchLabels":{"app":"web"}}]},
	            {"toCIDRSet":[{"cidr":"%s","except":["%s/32"]}]}]}]`, subnet, e.out.ip2))
	var deleted struct {
		Revision uint64 `json:"revision"`
	}
	if err := e.a.Client.Do(ctxT(t), http.MethodDelete, "/v1/policy", map[string]any{"labels": []string{"name=decoy"}}, &deleted); err != nil {
		t.Fatalf("delete the decoy rule: %v", err)
	}
	e.waitRevision(deleted.Revision)
	e.expect(
		tcpFact("client->web:8080", e.client, web, "8080", true),
		tcpFact("other->web:8080", e.other, web, "8080", false),
		tcpFact("client->outside:8080 (CIDR)", e.client, e.out.ip, "8080", true),
		tcpFact("client->outside second address (except)", e.client, e.out.ip2, "8080", false),
	)
	ifindex := uint32(e.a.endpoint(e.web.Attachment()).InterfaceIndex)
	subnetID := e.a.IPCache()[subnet]
	if subnetID == 0 {
		t.Fatalf("no ipcache entry for %s: %v", subnet, e.a.IPCache())
	}

	// Watch web's entry in the pinned endpoints map through the restart.
	stop := make(chan struct{})
	lost := make(chan string, 1)
	go func() {
		m, err := maps.OpenPinned(e.a.BPFRoot, maps.EndpointsMapName)
		if err != nil {
			lost <- err.Error()
			return
		}
		defer m.Close()
		ipc, err := maps.OpenPinned(e.a.BPFRoot, maps.IPCacheMapName)
		if err != nil {
			lost <- err.Error()
			return
		}
		defer ipc.Close()
		for {
			select {
			case <-stop:
				lost <- ""
				return
			default:
			}
			var v maps.EndpointValue
			if err := m.Lookup(maps.EndpointKey{IfIndex: ifindex}, &v); err != nil {
				lost <- "endpoint entry missing: " + err.Error()
				return
			}
			if v.Flags&maps.EndpointFlagIngressEnforced == 0 {
				lost <- fmt.Sprintf("ingress enforcement off (flags %#x)", v.Flags)
				return
			}
			var id maps.IPCacheValue
			if err := ipc.Lookup(maps.NewIPCacheKey(subnet), &id); err != nil || id.Identity != subnetID {
				lost <- fmt.Sprintf("ipcache %s: identity %d (%v), was %d", subnet, id.Identity, err, subnetID)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// Connections opened one after another throughout the stop, the
	// time the agent is down and its restart: not one may fail.
	loop := startTCPLoop(t, e.client, web, "8080")
	e.a.Stop()
	e.expect(
		tcpFact("client->web:8080 while the agent is down", e.client, web, "8080", true),
		tcpFact("other->web:8080 while the agent is down", e.other, web, "8080", false),
		tcpFact("client->outside:8080 while the agent is down", e.client, e.out.ip, "8080", true),
	)
	e.a.Restart()
	e.waitRevision(deleted.Revision)
	close(stop)
	loop.expectNoFailure("through the agent's stop and restart")
	if msg := <-lost; msg != "" {
		t.Errorf("during the restart: %s", msg)
	}
	e.expect(
		tcpFact("client->web:8080 after restart", e.client, web, "8080", true),
		tcpFact("other->web:8080 after restart", e.other, web, "8080", false),
		tcpFact("client->outside:8080 after restart", e.client, e.out.ip, "8080", true),
		tcpFact("client->outside second address after restart (except)", e.client, e.out.ip2, "8080", false),
	)
	if id := e.a.IPCache()[subnet]; id != subnetID {
		t.Errorf("%s has identity %d after the restart, %d before", subnet, id, subnetID)
	}
}
