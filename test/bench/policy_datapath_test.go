package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// scaleIdentityBase is the number of the first of the scale identities
// created as CiliumIdentity objects: far from where the allocator starts
// (256), so the bench pods' own identities never collide with them.
const scaleIdentityBase = 30000

// BenchmarkDatapathPolicyScale measures pod-to-pod TCP through
// membrane's datapath with 1 rule and with 1,000 rules selecting the
// server while 10,000 identities exist in the cluster: flat is the goal.
//
// Kubernetes mode (a real kube-apiserver), because there identities exist
// without local endpoints: 10,000 CiliumIdentity objects (scaleIdentity's
// labels: 1,000 apps, 100 teams, 10 namespaces) are in the agent's
// identities table before the pods start. The policy is one
// CiliumClusterwideNetworkPolicy put through PUT /v1/policy, replaced
// between the two sets:
//
//   - 1 rule: benchAllowRule (client -> server on the two ports);
//   - 1,000 rules: benchAllowRule and 999 rules selecting the server, rule
//     j allowing app-j (10 identities) on TCP 20000+j, and every 4th rule
//     also the whole namespace ns-j%10 (1,000 identities) on all ports:
//     5 namespaces, 5,000 identities allowed on all ports, and port keys
//     for the other apps' identities; the server's policy map holds about
//     10,000 keys (counted and printed).
//
// MEMBRANE_BENCH_RUNS rounds, the two sets alternating in order; each
// switch waits until both pods report the new revision (and checks the
// policy is enforced). Medians, the ratio 1,000 rules / 1 rule.
func BenchmarkDatapathPolicyScale(b *testing.B) {
	runs, cpu := setupTraffic(b)

	cluster := kubetest.Start(b)
	cluster.Kubectl(b, "create", "namespace", "membrane-system") // identity claims
	const node = "bench-node"
	a := startAgent(b, "--datapath-mode", "tc", "--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node,
		"--identity-gc-grace", "10h") // the scale identities are used by no endpoint: keep them
	createScaleIdentities(b, cluster.Kubeconfig())
	e2eutil.Eventually(b, 3*time.Minute, "the agent has the 10,000 identities", func() error {
		if n := len(a.Identities()); n < scaleIdentities {
			return fmt.Errorf("%d cluster identities", n)
		}
		return nil
	})

	server, client := newPod(b, "scale-server"), newPod(b, "scale-client")
	cluster.Apply(b, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {namespace: default, name: %s, labels: {app: bench-server}}
spec: {nodeName: %s, containers: [{name: c, image: pause}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: default, name: %s, labels: {app: bench-client}}
spec: {nodeName: %s, containers: [{name: c, image: pause}]}
`, server.Name, node, client.Name, node))
	e2eutil.Eventually(b, time.Minute, "the agent has both Pod objects", func() error {
		for _, p := range []*pod{server, client} {
			if _, err := a.Client.GetPod(ctxFor(b, 5*time.Second), "default", p.Name); err != nil {
				return err
			}
		}
		return nil
	})
	uids := podUIDs(b, cluster)
	server.UID, client.UID = uids[server.Name], uids[client.Name]
	pp, err := addPods(membraneNetwork(b, a), server, client)
	if err != nil {
		b.Fatal(err)
	}
	pp.mode = "membrane-k8s"

	sets := []struct {
		name   string
		rules  []any
		policy string
		keys   int // the server's keys in the policy map
		gbps   []float64
		tps    []float64
		rtt    []float64
	}{
		{name: "1 rule", rules: []any{benchAllowRule()}},
		{name: "1,000 rules", rules: scaleServerRules()},
	}
	apply := func(i int) {
		doc := map[string]any{
			"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
			"metadata": map[string]any{"name": "bench-scale"},
			"specs":    sets[i].rules,
		}
		sets[i].policy = putPolicy(b, a, pp, doc)
		if sets[i].keys == 0 {
			sets[i].keys = policyKeysOf(b, a, server)
		}
	}

	ip := server.IP.String()
	server.background(b, "iperf3", "-s", "-B", ip, "-p", strconv.Itoa(iperfPort))
	server.background(b, "taskset", "-c", cpu, "sockperf", "server", "--tcp", "-i", ip, "-p", strconv.Itoa(sockperfPort))
	apply(0)
	e2eutil.Eventually(b, 15*time.Second, "iperf3 warm-up", func() error { _, err := iperf(pp, 1); return err })
	e2eutil.Eventually(b, 15*time.Second, "sockperf warm-up", func() error { _, err := sockperf(pp, cpu, 1); return err })

	var switchTimes []float64
	for r := range runs {
		for _, i := range rotate(len(sets), r) {
			start := time.Now()
			apply(i)
			switchTimes = append(switchTimes, ms(time.Since(start)))
			g, err := iperf(pp, secs)
			if err != nil {
				b.Fatal(err)
			}
			rr, err := sockperf(pp, cpu, secs)
			if err != nil {
				b.Fatal(err)
			}
			sets[i].gbps = append(sets[i].gbps, g)
			sets[i].tps = append(sets[i].tps, rr.tps)
			sets[i].rtt = append(sets[i].rtt, rr.p50us)
		}
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "pod to pod on membrane (Kubernetes mode, %d identities in the cluster), 1 rule vs 1,000 rules selecting the server,\n", len(a.Identities()))
	fmt.Fprintf(&sb, "%d rounds of %d s per tool, the sets alternating; sockperf pinned to CPU %s; medians\n", runs, secs, cpu)
	fmt.Fprintf(&sb, "%-12s %8s %9s %8s\n", "rules", "Gbit/s", "trans/s", "p50 µs")
	for _, s := range sets {
		fmt.Fprintf(&sb, "%-12s %8.2f %9.0f %8.1f\n", s.name, median(s.gbps), median(s.tps), median(s.rtt))
	}
	g := median(sets[1].gbps) / median(sets[0].gbps)
	t := median(sets[1].tps) / median(sets[0].tps)
	l := median(sets[1].rtt) / median(sets[0].rtt)
	fmt.Fprintf(&sb, "%-12s %8.2f %9.2f %8.2f\n", "ratio 1k/1", g, t, l)
	for _, s := range sets {
		fmt.Fprintf(&sb, "  %s: %s; the server's policy map keys: %d\n", s.name, s.policy, s.keys)
		fmt.Fprintf(&sb, "    rounds: Gbit/s %s | trans/s %s | p50 µs %s\n", fmtRuns(s.gbps, "%.1f"), fmtRuns(s.tps, "%.0f"), fmtRuns(s.rtt, "%.1f"))
	}
	fmt.Fprintf(&sb, "  switching the set (PUT -> both pods at the revision, enforcement probe included): median %.0f ms, max %.0f ms",
		median(switchTimes), percentile(switchTimes, 100))
	printResults(b, sb.String())
	b.ReportMetric(median(sets[0].gbps), "1rule-Gbit/s")
	b.ReportMetric(median(sets[1].gbps), "1000rules-Gbit/s")
	b.ReportMetric(g, "throughput-ratio-1000/1")
	b.ReportMetric(median(sets[0].rtt), "1rule-rtt-p50-µs")
	b.ReportMetric(median(sets[1].rtt), "1000rules-rtt-p50-µs")
	b.ReportMetric(l, "rtt-p50-ratio-1000/1")
}

// policyKeysOf counts the keys of p's endpoint in the pinned policy map.
func policyKeysOf(b *testing.B, a *agent, p *pod) int {
	b.Helper()
	ep, err := a.Client.GetEndpoint(ctxFor(b, 10*time.Second), plugin.Attachment{ContainerID: p.ContainerID, IfName: "eth0"}.EndpointID())
	if err != nil {
		b.Fatalf("GET endpoint of %s: %v", p.Name, err)
	}
	m, err := maps.OpenPinned(a.BPFRoot, maps.PolicyMapName)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var k maps.PolicyKey
	var v maps.PolicyValue
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		if uint64(k.EndpointID) == uint64(ep.ID) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		b.Fatalf("reading the policy map: %v", err)
	}
	return n
}

// scaleServerRules is benchAllowRule and 999 rules selecting the server
// whose peers are among the scale identities (see
// BenchmarkDatapathPolicyScale).
func scaleServerRules() []any {
	sel := func(k, v string) map[string]any { return map[string]any{"matchLabels": map[string]string{k: v}} }
	rules := []any{benchAllowRule()}
	for j := 1; j < scaleRules; j++ {
		ingress := []any{map[string]any{
			"fromEndpoints": []any{sel("app", fmt.Sprintf("app-%d", j))},
			"toPorts":       []any{map[string]any{"ports": []any{map[string]string{"port": strconv.Itoa(20000 + j), "protocol": "TCP"}}}},
		}}
		if j%4 == 0 {
			ingress = append(ingress, map[string]any{
				"fromEndpoints": []any{sel("io.kubernetes.pod.namespace", fmt.Sprintf("ns-%d", j%10))},
			})
		}
		rules = append(rules, map[string]any{"endpointSelector": sel("app", "bench-server"), "ingress": ingress})
	}
	return rules
}

// createScaleIdentities creates the 10,000 CiliumIdentity objects of
// scaleIdentity (numbered from scaleIdentityBase), 16 at a time, without
// client-side throttling. The CRD is the agent's to install: the first
// create is retried until it is there.
func createScaleIdentities(b *testing.B, kubeconfig string) {
	b.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	rc.QPS, rc.Burst = -1, 0 // no client-side rate limit
	cv2, err := k8sclient.NewCiliumV2(rc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	create := func(i int) error {
		id := scaleIdentity(i)
		ci := v2.NewCiliumIdentity(uint32(scaleIdentityBase+i), id.Labels)
		_, err := cv2.CiliumIdentities().Create(ctx, ci, metav1.CreateOptions{})
		return err
	}
	e2eutil.Eventually(b, time.Minute, "the CiliumIdentity CRD is served", func() error { return create(0) })
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := create(i); err != nil {
					select {
					case errs <- fmt.Errorf("creating CiliumIdentity %d: %w", scaleIdentityBase+i, err):
					default:
					}
				}
			}
		}()
	}
	for i := 1; i < scaleIdentities; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}
