package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Failures in a two-node cluster while traffic flows between the nodes
// under policy: a server pod on node-a, a client pod (allowed) and
// another pod (not allowed) on node-b, a CiliumNetworkPolicy letting the
// client reach the server on TCP 8081 and 9000 and ping it. One TCP
// connection carries a stream whose every byte is checked and pings go
// out every 20 ms, from before the failure until after the recovery; not
// one may be lost, and the connection must not be reset.

// failureEnv is the two nodes, their pods and the policy between them.
type failureEnv struct {
	t                     *testing.T
	m                     *multiCluster
	a, b                  *mnode
	server, client, other *pod
	sip                   string
}

const failurePolicy = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server, namespace: web}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}, {port: "9000", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps: [{fields: [{type: EchoRequest}]}]
`

func newFailureEnv(t *testing.T) *failureEnv {
	t.Helper()
	setup(t)
	m := newMultiCluster(t, "web")
	e := &failureEnv{t: t, m: m, a: m.startNode(t, "node-a", false), b: m.startNode(t, "node-b", true)}
	waitRoute(t, e.a, e.b.agent.PodCIDR, e.b.ip, true)
	waitRoute(t, e.b, e.a.agent.PodCIDR, e.a.ip, true)
	e.server = e.a.pod(t, m, "web", "server")
	e.client = e.b.pod(t, m, "web", "client")
	e.other = e.b.pod(t, m, "web", "other")
	e.sip = e.server.IP().String()
	startServer(t, e.server, "8080", "8081")
	m.kube.Apply(t, failurePolicy)
	e.expectPolicy("once the policy is in place")
	return e
}

// expectPolicy waits until the policy's verdicts hold between the nodes.
func (e *failureEnv) expectPolicy(when string) {
	e.t.Helper()
	e2eutil.Eventually(e.t, 30*time.Second, "cross-node policy "+when, func() error {
		switch {
		case !canTCP(e.client, e.sip, "8081"):
			return fmt.Errorf("client -> server:8081 dropped")
		case !canPing(e.client, e.sip):
			return fmt.Errorf("client -> server ping dropped")
		case canTCP(e.client, e.sip, "8080"):
			return fmt.Errorf("client -> server:8080 (port not allowed) passed")
		case canTCP(e.other, e.sip, "8081"):
			return fmt.Errorf("other -> server:8081 (peer not allowed) passed")
		}
		return nil
	})
}

// flows is a stream and pings from the client to the server.
type flows struct {
	stream *e2eutil.Stream
	pings  *pingLoop
}

func (e *failureEnv) startFlows() *flows {
	e.t.Helper()
	f := &flows{stream: e2eutil.StartStream(e.t, e.client.netns(), e.server.netns(), net.JoinHostPort(e.sip, "9000"), "9000")}
	f.pings = startPingLoop(e.t, e.client, e.sip)
	f.pings.waitRounds(1)
	return f
}

// finish stops the flows after one more round of pings and fails the
// test if any ping or byte was lost.
func (f *flows) finish(t *testing.T, during string) {
	t.Helper()
	f.pings.waitRounds(f.pings.done() + 1)
	n, err := f.stream.Finish()
	if err != nil {
		t.Errorf("TCP stream %s: %v", during, err)
	} else {
		t.Logf("TCP stream %s: %d lines, all in order", during, n)
	}
	sent, got, err := f.pings.stop()
	if err != nil {
		t.Errorf("pings %s: %v", during, err)
	}
	if sent == 0 || got != sent {
		t.Errorf("pings %s: %d sent, %d answered, want every one", during, sent, got)
	} else {
		t.Logf("pings %s: %d sent, all answered", during, sent)
	}
}

// pingLoop pings in rounds of pingRound packets 20 ms apart until
// stopped, counting what was sent and answered.
type pingLoop struct {
	t      *testing.T
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu             sync.Mutex
	rounds         int
	sent, received int
	err            error
}

const pingRound = 50

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func startPingLoop(t *testing.T, from *pod, ip string) *pingLoop {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l := &pingLoop{t: t, cancel: cancel}
	t.Cleanup(func() { cancel(); l.wg.Wait() })
	l.wg.Go(func() {
		for ctx.Err() == nil {
			// -W: a reply may wait out a restart; ping's exit status is
			// 1 for any loss, so the summary is what counts.
			out, _ := from.netns().Command(context.Background(), "ping", "-n", "-q", "-c", strconv.Itoa(pingRound), "-i", "0.02", "-W", "5", ip).CombinedOutput()
			m := pingSummary.FindSubmatch(out)
			l.mu.Lock()
			if m == nil {
				if l.err == nil {
					l.err = fmt.Errorf("round %d: no summary: %s", l.rounds+1, out)
				}
			} else {
				s, _ := strconv.Atoi(string(m[1]))
				r, _ := strconv.Atoi(string(m[2]))
				l.sent += s
				l.received += r
				if r != s && l.err == nil {
					l.err = fmt.Errorf("round %d lost %d of %d: %s", l.rounds+1, s-r, s, out)
				}
			}
			l.rounds++
			l.mu.Unlock()
		}
	})
	return l
}

func (l *pingLoop) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rounds
}

// waitRounds waits until n rounds are done.
func (l *pingLoop) waitRounds(n int) {
	l.t.Helper()
	e2eutil.Eventually(l.t, time.Minute, fmt.Sprintf("%d rounds of pings", n), func() error {
		if d := l.done(); d < n {
			return fmt.Errorf("%d done", d)
		}
		return nil
	})
}

// stop ends the loop after its current round.
func (l *pingLoop) stop() (sent, received int, err error) {
	l.cancel()
	l.wg.Wait()
	return l.sent, l.received, l.err
}

// state is what a node's datapath holds for the other node: its routes
// and the pinned ipcache entries of the pods and nodes.
func (e *failureEnv) state(n *mnode) (routes []string, ipc map[netip.Prefix]uint32) {
	e.t.Helper()
	all := n.agent.IPCache()
	ipc = map[netip.Prefix]uint32{}
	for _, a := range []netip.Addr{e.server.IP(), e.client.IP(), e.other.IP(), e.a.ip, e.b.ip} {
		p := netip.PrefixFrom(a, 32)
		ipc[p] = all[p]
	}
	return n.routes(e.t), ipc
}

// expectState fails the test unless n's datapath holds what it did.
func (e *failureEnv) expectState(n *mnode, when string, routes []string, ipc map[netip.Prefix]uint32) {
	e.t.Helper()
	r, i := e.state(n)
	if fmt.Sprint(r) != fmt.Sprint(routes) {
		e.t.Errorf("%s's routes %s: %v, were %v", n.name, when, r, routes)
	}
	if !maps.Equal(i, ipc) {
		e.t.Errorf("%s's ipcache entries %s: %v, were %v", n.name, when, i, ipc)
	}
}

// Each node's agent is killed (SIGKILL, by its PID) and restarted on the
// same state and bpf root while the stream and the pings run: the
// datapath keeps carrying them and enforcing the policy throughout.
func TestMultiNodeAgentKilled(t *testing.T) {
	e := newFailureEnv(t)
	for _, n := range []*mnode{e.a, e.b} {
		routes, ipc := e.state(n)
		f := e.startFlows()
		n.agent.Kill()
		// While it is down: still enforced (the denied probes show it; the
		// allowed ones are the flows).
		if canTCP(e.client, e.sip, "8080") || canTCP(e.other, e.sip, "8081") {
			t.Errorf("policy not enforced while %s's agent is down", n.name)
		}
		n.agent.Restart()
		waitKubernetes(t, n.agent, n.name+"'s agent reachable after the restart", func(k *models.KubernetesStatus) bool { return k.Reachable })
		waitNodeRow(t, n, map[*mnode]*mnode{e.a: e.b, e.b: e.a}[n].name, func(r nodeListRow) error {
			if r.Routes != "installed" {
				return fmt.Errorf("routes %s", r.Routes)
			}
			return nil
		})
		f.finish(t, "through the kill and restart of "+n.name+"'s agent")
		e.expectState(n, "after its agent's restart", routes, ipc)
		e.expectPolicy("after " + n.name + "'s agent restarted")
	}
}

// The API server stops for a while with flows established: both nodes
// keep routes, remote ipcache entries and policy (the allowed flows
// pass, denied ones drop), and nothing is flushed once it is back.
func TestMultiNodeAPIServerDown(t *testing.T) {
	e := newFailureEnv(t)
	routesA, ipcA := e.state(e.a)
	routesB, ipcB := e.state(e.b)
	f := e.startFlows()

	e.m.kube.StopAPIServer()
	apiUp := false
	t.Cleanup(func() {
		if !apiUp {
			e.m.kube.StartAPIServer()
		}
	})
	for _, n := range []*mnode{e.a, e.b} {
		waitKubernetes(t, n.agent, n.name+": API server unreachable", func(k *models.KubernetesStatus) bool {
			return !k.Reachable && k.LastError != ""
		})
	}
	// A few seconds of outage, seen by the pings.
	f.pings.waitRounds(f.pings.done() + 3)
	e.expectPolicy("while the API server is away")
	e.expectState(e.a, "while the API server is away", routesA, ipcA)
	e.expectState(e.b, "while the API server is away", routesB, ipcB)

	if err := e.m.kube.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	apiUp = true
	for _, n := range []*mnode{e.a, e.b} {
		waitKubernetes(t, n.agent, n.name+": API server reachable again", func(k *models.KubernetesStatus) bool { return k.Reachable })
	}
	f.finish(t, "through the API server's outage")
	e.expectState(e.a, "after the API server came back", routesA, ipcA)
	e.expectState(e.b, "after the API server came back", routesB, ipcB)
	e.expectPolicy("after the API server came back")
}
