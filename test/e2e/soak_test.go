package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// TestBurstAddDel: 100 pods added at once, then deleted at once, as a node
// does when a large deployment scales up and down. Every ADD and DEL
// succeeds and the agent answers none of them 429: its endpoint API queues
// a burst instead of refusing it (the plugin would retry a 429, so the
// agent's request log is what tells). The limiters keep their defaults but
// the queueing bound (--endpoint-api-max-wait, 15s) is raised, so a slow
// machine cannot turn a queued request into a 429; the slowest request is
// logged to compare with the default.
func TestBurstAddDel(t *testing.T) {
	setup(t)
	const N = 100
	a := startAgent(t, agentOpts{Extra: []string{"--debug", "--endpoint-api-max-wait=1m"}})
	n := newNetwork(t, a, "", nil)
	a.putPod("burst", "web", map[string]string{"app": "burst"})
	pods := make([]*pod, N)
	for i := range pods {
		pods[i] = newPod(t, "burst", "web")
	}

	errs := make([]error, N)
	run := func(op string, fn func(*pod) error) {
		start := time.Now()
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Go(func() { errs[i] = fn(p) })
		}
		wg.Wait()
		t.Logf("%d parallel cnitool %s: makespan %s", N, op, time.Since(start).Round(time.Millisecond))
		for _, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", op, err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	run("add", n.add)
	if got := len(a.Endpoints()); got != N {
		t.Fatalf("%d endpoints after %d ADDs", got, N)
	}
	run("del", n.del)

	if eps := a.Endpoints(); len(eps) != 0 {
		t.Errorf("%d endpoints left after the DELs", len(eps))
	}
	if ips := a.IPs(); len(ips) != 0 {
		t.Errorf("addresses left after the DELs: %v", ips)
	}
	for _, p := range pods {
		if linkExists(p.Attachment().HostVeth()) {
			t.Errorf("host veth %s left after its DEL", p.Attachment().HostVeth())
		}
	}
	assertNoIdleIdentities(t, a)
	requests, limited, slowest := requestLog(a)
	t.Logf("%d endpoint requests, the slowest (queueing included) %s; the default --endpoint-api-max-wait is 15s",
		requests, slowest.Round(time.Millisecond))
	if requests < 2*N {
		t.Fatalf("the agent logged %d endpoint requests, want at least %d: is --debug's request log still there?", requests, 2*N)
	}
	if limited != 0 {
		t.Errorf("the agent answered %d of %d endpoint requests 429", limited, requests)
	}
}

// requestLog counts the endpoint requests in the agent's debug log, how
// many of them were answered 429, and how long the slowest took.
func requestLog(a *agent) (requests, limited int, slowest time.Duration) {
	for _, line := range strings.Split(a.Log(1<<30), "\n") {
		if !strings.Contains(line, "msg=\"API request\"") || !strings.Contains(line, "path=/v1/endpoint/") {
			continue
		}
		requests++
		if strings.Contains(line, "status=429") {
			limited++
		}
		if _, v, ok := strings.Cut(line, " duration="); ok {
			v, _, _ = strings.Cut(v, " ")
			if d, err := time.ParseDuration(v); err == nil {
				slowest = max(slowest, d)
			}
		}
	}
	return requests, limited, slowest
}

// soakCycles is how many ADD/DEL cycles TestChurnSoak runs: few in CI,
// more with MEMBRANE_SOAK_CYCLES (make soak).
func soakCycles(t *testing.T) int {
	s := os.Getenv("MEMBRANE_SOAK_CYCLES")
	if s == "" {
		return 40
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("MEMBRANE_SOAK_CYCLES=%q: want a positive number", s)
	}
	return n
}

// agentState is what the agent holds that pods coming and going must
// return to: endpoints, addresses, identities, the pod CIDR's ipcache
// entries and the number of policy map entries.
type agentState struct {
	endpoints  []string
	ips        []string
	identities []uint32
	ipcache    map[netip.Prefix]uint32
	policy     int
}

func readAgentState(t *testing.T, a *agent) agentState {
	t.Helper()
	var s agentState
	for _, ep := range a.Endpoints() {
		s.endpoints = append(s.endpoints, ep.ContainerID)
	}
	for _, r := range a.IPs() {
		s.ips = append(s.ips, r.IP)
	}
	s.identities = slices.Sorted(maps.Keys(a.Identities()))
	// Only the pods' entries: the host's addresses (identity 1) follow the
	// node's interfaces, which other tests change.
	s.ipcache = a.IPCache()
	maps.DeleteFunc(s.ipcache, func(p netip.Prefix, _ uint32) bool { return !a.PodCIDR.Contains(p.Addr()) })
	s.policy = policyMapEntries(t, a)
	slices.Sort(s.endpoints)
	slices.Sort(s.ips)
	return s
}

// diff says how s differs from base, "" if it does not.
func (s agentState) diff(base agentState) string {
	var d []string
	if !slices.Equal(s.endpoints, base.endpoints) {
		d = append(d, fmt.Sprintf("endpoints %v, before %v", s.endpoints, base.endpoints))
	}
	if !slices.Equal(s.ips, base.ips) {
		d = append(d, fmt.Sprintf("addresses %v, before %v", s.ips, base.ips))
	}
	if !slices.Equal(s.identities, base.identities) {
		d = append(d, fmt.Sprintf("identities %v, before %v", s.identities, base.identities))
	}
	if !maps.Equal(s.ipcache, base.ipcache) {
		d = append(d, fmt.Sprintf("ipcache %v, before %v", s.ipcache, base.ipcache))
	}
	if s.policy != base.policy {
		d = append(d, fmt.Sprintf("%d policy map entries, before %d", s.policy, base.policy))
	}
	return strings.Join(d, "; ")
}

// policyMapEntries counts the agent's policy map entries the way an
// operator does: membrane bpf policy list.
func policyMapEntries(t *testing.T, a *agent) int {
	t.Helper()
	out, err := exec.Command(bins.CLI, "--socket", a.Socket, "bpf", "policy", "list", "--bpf-root", a.BPFRoot, "-o", "json").Output()
	if err != nil {
		t.Fatalf("membrane bpf policy list: %v", err)
	}
	var l struct {
		MapEntries *int `json:"map-entries"`
	}
	if err := json.Unmarshal(out, &l); err != nil || l.MapEntries == nil {
		t.Fatalf("membrane bpf policy list -o json printed no count (%v): %s", err, out)
	}
	return *l.MapEntries
}

// TestChurnSoak: pods come and go, four at a time, each with labels of its
// own (a new identity each time) under a policy that selects them all (so
// every endpoint's policy map entries change with each peer). Afterwards
// nothing is left of them: no host veth, address, endpoint, identity,
// ipcache or policy map entry; and the agent's goroutines, threads and
// open files are back near where they were, and RSS has grown by less
// than 64 MiB (generous bounds: a leak grows with the cycles, 40 at
// least). MEMBRANE_SOAK_CYCLES runs it longer (make soak).
func TestChurnSoak(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	const workers = 4
	cycles := soakCycles(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	if _, err := a.Client.ImportPolicy(ctxT(t), "application/yaml", []byte(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: soak, namespace: soak}
spec:
  endpointSelector: {matchLabels: {app: soak}}
  ingress: [{fromEndpoints: [{matchLabels: {app: soak}}], toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
  egress: [{toEndpoints: [{matchLabels: {app: soak}}]}]
`)); err != nil {
		t.Fatal(err)
	}
	// A pod that stays: its policy map entries follow its peers.
	a.putPod("soak", "steady", map[string]string{"app": "soak"})
	steady := newPod(t, "soak", "steady")
	if err := n.add(steady); err != nil {
		t.Fatal(err)
	}

	var next atomic.Int64
	var failures atomic.Int64
	var mu sync.Mutex
	var veths []string
	// churn runs count ADD/DEL cycles, workers at a time.
	churn := func(count int) {
		var wg sync.WaitGroup
		var done atomic.Int64
		for range workers {
			wg.Go(func() {
				for done.Add(1) <= int64(count) {
					if err := churnOnce(t, a, n, int(next.Add(1)), &mu, &veths); err != nil {
						t.Error(err)
						if failures.Add(1) >= 5 {
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}

	// A few cycles first, so what the agent starts on first use (pools,
	// threads, connections) is part of the baseline.
	churn(2 * workers)
	base := waitSettled(t, a, nil)
	rtBase := runtimeCounts(t, a)
	t.Logf("baseline: %+v; %d policy map entries, %d ipcache entries", *rtBase, base.policy, len(base.ipcache))

	start := time.Now()
	churn(cycles)
	t.Logf("%d ADD/DEL cycles, %d at a time: %s", cycles, workers, time.Since(start).Round(time.Millisecond))

	waitSettled(t, a, &base)
	for _, v := range veths {
		if linkExists(v) {
			t.Errorf("host veth %s left after its DEL", v)
		}
	}
	// Goroutines of finished requests end shortly after their answer. The
	// Go runtime keeps the threads it started for blocking syscalls, so
	// their count follows the peak, not the present: more slack.
	const goroutineSlack, fdSlack, threadSlack = 20, 10, 16
	var rt *models.Runtime
	e2eutil.Eventually(t, 20*time.Second, "goroutines, open files and threads back near the baseline", func() error {
		rt = runtimeCounts(t, a)
		if rt.Goroutines > rtBase.Goroutines+goroutineSlack || rt.OpenFDs > rtBase.OpenFDs+fdSlack || rt.Threads > rtBase.Threads+threadSlack {
			return fmt.Errorf("now %+v, baseline %+v (slack: %d goroutines, %d files, %d threads)",
				*rt, *rtBase, goroutineSlack, fdSlack, threadSlack)
		}
		return nil
	})
	growth := rt.RSSBytes - rtBase.RSSBytes
	t.Logf("after %d cycles: %+v; RSS %+.1f MiB, Go heap %+.1f MiB", cycles, *rt,
		float64(growth)/(1<<20), float64(rt.HeapBytes-rtBase.HeapBytes)/(1<<20))
	// Generous: the heap may grow to a new GC target; a leak per cycle
	// over a long run does not fit.
	if growth > 64<<20 {
		t.Errorf("RSS grew by %d MiB over %d cycles", growth>>20, cycles)
	}
}

// churnOnce adds a pod with labels of its own and deletes it: its netns is
// removed right away, not at the end of the test.
func churnOnce(t *testing.T, a *agent, n *network, i int, mu *sync.Mutex, veths *[]string) error {
	name := fmt.Sprintf("churn-%d", i)
	if _, err := a.Client.PutPod(ctxT(t), &models.Pod{Namespace: "soak", Name: name,
		Labels: map[string]string{"app": "soak", "cycle": strconv.Itoa(i)}}); err != nil {
		return fmt.Errorf("PUT pod %s: %w", name, err)
	}
	p := newPod(t, "soak", name)
	mu.Lock()
	*veths = append(*veths, p.Attachment().HostVeth())
	mu.Unlock()
	defer exec.Command("ip", "netns", "del", p.NetnsName).Run()
	if err := n.add(p); err != nil {
		return err
	}
	if err := n.del(p); err != nil {
		return err
	}
	if err := a.Client.DeletePod(ctxT(t), "soak", name); err != nil {
		return fmt.Errorf("DELETE pod %s: %w", name, err)
	}
	return nil
}

// waitSettled waits until the agent's state stops changing (identities
// and map entries follow the endpoints table) and, with want, until it is
// want; it returns the state.
func waitSettled(t *testing.T, a *agent, want *agentState) agentState {
	t.Helper()
	var last agentState
	var lastDiff string
	stable := 0
	e2eutil.Eventually(t, 30*time.Second, "the agent's state settles back to where it was", func() error {
		s := readAgentState(t, a)
		if want != nil {
			if lastDiff = s.diff(*want); lastDiff != "" {
				return fmt.Errorf("%s", lastDiff)
			}
			last = s
			return nil
		}
		if s.diff(last) != "" || len(s.endpoints) != 1 {
			last, stable = s, 0
			return fmt.Errorf("still changing: %d endpoints", len(s.endpoints))
		}
		if stable++; stable < 3 {
			return fmt.Errorf("unchanged %d times", stable)
		}
		return nil
	})
	return last
}

func runtimeCounts(t *testing.T, a *agent) *models.Runtime {
	t.Helper()
	rt, err := a.Client.Runtime(ctxT(t))
	if err != nil {
		t.Fatalf("GET /v1/debug/runtime: %v", err)
	}
	return rt
}

// TestAPIBadInput: what a buggy or hostile client sends the agent's API
// (oversized, deeply nested, invalid UTF-8 bodies; IDs that try to climb
// out of a path) is answered 4xx, never 5xx, and the agent keeps serving
// without a panic in its log.
func TestAPIBadInput(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	// A redirect (the mux's answer to dot segments) is the answer, not
	// something to follow.
	hc := *a.Client.HTTPClient()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	do := func(method, path string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), method, "http://membrane"+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	nested := func(depth int) []byte {
		return []byte(`{"labels":` + strings.Repeat(`{"a":`, depth) + `1` + strings.Repeat(`}`, depth) + `}`)
	}
	bodies := []struct {
		name string
		body []byte
	}{
		{"oversized", []byte(`{"container-id":"` + strings.Repeat("x", 2<<20) + `"}`)},
		{"deeply nested objects", nested(100000)},
		{"deeply nested arrays", []byte(strings.Repeat("[", 200000))},
		{"invalid UTF-8 in a value", []byte("{\"container-id\":\"\xff\xfe\xfd\",\"interface-name\":\"lxc\xc3\x28\"}")},
		{"invalid UTF-8 in a key", []byte("{\"\xff\":1}")},
		{"a number too large", []byte(`{"interface-index":1e400}`)},
		{"not JSON", []byte("\x00\x01\x02")},
	}
	bodyRoutes := []string{
		"PUT /v1/endpoint/0",
		"PATCH /v1/endpoint/1/labels",
		"POST /v1/ipam",
		"PUT /v1/pod/default/web",
		"PUT /v1/policy",
		"DELETE /v1/policy",
		"POST /v1/policy/trace",
		"DELETE /v1/endpoint",
	}
	check := func(what string, code int, answer string, ok ...int) {
		t.Helper()
		if code >= 500 || code < 400 && !slices.Contains(ok, code) {
			t.Errorf("%s: %d %s", what, code, answer)
		}
	}
	for _, route := range bodyRoutes {
		method, path, _ := strings.Cut(route, " ")
		for _, b := range bodies {
			code, answer := do(method, path, b.body)
			check(route+" with "+b.name, code, answer)
		}
	}

	// IDs that climb out of their path segment, escaped so no client or
	// mux cleans them away first; the mux's own redirect (301, 307) of unescaped
	// dot segments is fine too.
	for _, id := range []string{"..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "%2Fetc%2Fpasswd", "a%00b", "%ff%fe", strings.Repeat("9", 400)} {
		for _, route := range []string{
			"GET /v1/endpoint/%s", "DELETE /v1/endpoint/%s", "GET /v1/endpoint/%s/log",
			"GET /v1/endpoint/%s/labels", "GET /v1/endpoint/%s/healthz", "GET /v1/identity/%s",
			"DELETE /v1/ipam/%s", "GET /v1/pod/default/%s", "GET /v1/pod/%s/web", "DELETE /v1/pod/%s/web",
		} {
			method, path, _ := strings.Cut(fmt.Sprintf(route, id), " ")
			code, answer := do(method, path, nil)
			check(method+" "+path, code, answer, http.StatusMovedPermanently, http.StatusTemporaryRedirect)
		}
		code, answer := do("PUT", "/v1/pod/"+id+"/web", []byte(`{"labels":{"app":"x"}}`))
		check("PUT /v1/pod/"+id+"/web", code, answer, http.StatusMovedPermanently, http.StatusTemporaryRedirect)
		code, answer = do("PUT", "/v1/endpoint/"+id, []byte(`{}`))
		check("PUT /v1/endpoint/"+id, code, answer, http.StatusMovedPermanently, http.StatusTemporaryRedirect)
	}
	if _, err := a.Client.Healthz(ctxT(t)); err != nil {
		t.Fatalf("the agent stopped answering: %v", err)
	}
	if log := a.Log(1 << 30); strings.Contains(log, "panic") {
		t.Errorf("the agent's log mentions a panic:\n%s", e2eutil.LastLines(log, 40))
	}
}
