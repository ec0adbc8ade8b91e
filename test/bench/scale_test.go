package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/internal/testutil"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// BenchmarkScale runs N agents (node-0..node-N-1, own state dirs and bpf
// roots, Kubernetes mode, one real kube-apiserver) and starts M pod
// endpoints on each (PUT /v1/endpoint with a sync build), node by node.
// It reports the time from a pod's endpoint being ready until its
// identity is in EVERY other node's pinned ipcache map (p50/p99/max over
// pods x observing nodes), the API server writes per pod start and
// delete, the watch events each agent received per pod change in the
// cluster (its k8s-status counters), and each agent's live Go heap
// (after a collection) per remote endpoint (the growth while other
// nodes' pods started, divided by their number). MEMBRANE_BENCH_NODES (default 4) and
// MEMBRANE_BENCH_PODS_PER_NODE (default 50) set N and M.
func BenchmarkScale(b *testing.B) {
	setup(b)
	nNodes := max(envInt("MEMBRANE_BENCH_NODES", 4), 2)
	m := envInt("MEMBRANE_BENCH_PODS_PER_NODE", 50)
	cluster := kubetest.Start(b)
	cluster.Kubectl(b, "create", "namespace", "membrane-system") // identity claims
	bpf := testutil.BPFDir(b)
	nodes := make([]*agent, nNodes)
	for i := range nodes {
		nodes[i] = startNode(b, cluster, bpf, fmt.Sprintf("node-%d", i))
	}
	podName := func(node, i int) string { return fmt.Sprintf("s-%d-%d", node, i) }
	var manifest strings.Builder
	for j := range nodes {
		for i := range m {
			// A few label sets: most pods start with an identity that exists.
			fmt.Fprintf(&manifest, "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: default, name: %s, labels: {app: scale-%d}}\nspec: {nodeName: node-%d, containers: [{name: c, image: pause}]}\n",
				podName(j, i), i%5, j)
		}
	}
	cluster.Apply(b, manifest.String())
	for j, ag := range nodes {
		ag.waitRemoteSynced(3*time.Minute, ag, podName(j, m-1))
	}
	ipcs := make([]*ebpf.Map, nNodes)
	for j, ag := range nodes {
		ipc, err := maps.OpenPinned(ag.BPFRoot, maps.IPCacheMapName)
		if err != nil {
			b.Fatal(err)
		}
		defer ipc.Close()
		ipcs[j] = ipc
	}
	cs, err := k8sclient.New(cluster.Kubeconfig(), "bench")
	if err != nil {
		b.Fatal(err)
	}

	type ep struct {
		id    string
		key   maps.IPCacheKey
		ident uint32
	}
	eps := make([][]ep, nNodes)
	put := func(j, i int) {
		addr := nodes[j].PodCIDR.Addr()
		for range i + 2 {
			addr = addr.Next()
		}
		e, err := nodes[j].Client.PutEndpoint(ctxFor(b, 30*time.Second), "0", &models.EndpointChangeRequest{
			ContainerID: "scale-" + podName(j, i), ContainerInterfaceName: "eth0",
			Addressing: &models.AddressPair{IPv4: addr.String()}, K8sNamespace: "default",
			K8sPodName: podName(j, i), SyncBuildEndpoint: true,
		})
		if err != nil {
			b.Fatal(err)
		}
		if e.State != models.StateReady || e.Identity == nil {
			b.Fatalf("endpoint %s is %s after a sync build", podName(j, i), e.State)
		}
		eps[j] = append(eps[j], ep{id: fmt.Sprint(e.ID), key: maps.NewIPCacheKey(netip.PrefixFrom(addr, 32)), ident: uint32(e.Identity.ID)})
	}
	// until polls every other node's pinned map until e is (or is not)
	// there, and returns the time each node took.
	until := func(j int, e ep, present bool) []float64 {
		t0 := time.Now()
		var out []float64
		pending := map[int]bool{}
		for k := range nodes {
			if k != j {
				pending[k] = true
			}
		}
		for len(pending) > 0 {
			if time.Since(t0) > time.Minute {
				b.Fatalf("endpoint of node-%d present=%v: not on %d nodes within a minute", j, present, len(pending))
			}
			for k := range pending {
				var v maps.IPCacheValue
				err := ipcs[k].Lookup(&e.key, &v)
				if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					b.Fatal(err)
				}
				if (err == nil && v.Identity == e.ident) == present {
					out = append(out, ms(time.Since(t0)))
					delete(pending, k)
				}
			}
			time.Sleep(500 * time.Microsecond)
		}
		return out
	}
	heap := func() []int64 {
		out := make([]int64, nNodes)
		for k, ag := range nodes {
			r, err := ag.Client.RuntimeAfterGC(ctxFor(b, 10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			out[k] = r.HeapBytes
		}
		return out
	}

	// Node by node: a node's pods are local to it and remote to all the
	// others, so each agent's heap growth splits into both.
	before := make([]map[string]uint64, nNodes)
	for k, ag := range nodes {
		before[k] = k8sEvents(b, ag)
	}
	w := watchWrites(b, cs)
	remoteHeap, localHeap := make([]int64, nNodes), make([]int64, nNodes)
	var add []float64
	h := heap()
	for j := range nodes {
		for i := range m {
			put(j, i)
			add = append(add, until(j, eps[j][i], true)...)
		}
		time.Sleep(time.Second) // let coalesced writes land
		h2 := heap()
		for k := range nodes {
			if k == j {
				localHeap[k] += h2[k] - h[k]
			} else {
				remoteHeap[k] += h2[k] - h[k]
			}
		}
		h = h2
	}
	startWrites := w.stop()
	afterStart := make([]map[string]uint64, nNodes)
	for k, ag := range nodes {
		afterStart[k] = k8sEvents(b, ag)
	}
	w = watchWrites(b, cs)
	var remove []float64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for j := range nodes { // deletes spread over the nodes, one per node at a time
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, e := range eps[j] {
				if err := nodes[j].Client.DeleteEndpoint(ctxFor(b, 30*time.Second), e.id); err != nil {
					b.Error(err)
					return
				}
				d := until(j, e, false)
				mu.Lock()
				remove = append(remove, d...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	time.Sleep(2 * time.Second)
	delWrites := w.stop()

	pods := nNodes * m
	var sb strings.Builder
	fmt.Fprintf(&sb, "scale: %d nodes x %d pods (%d pods), loopback API server, starts node by node, one at a time\n", nNodes, m, pods)
	fmt.Fprintf(&sb, "%-52s %.1f / %.1f / %.1f ms (%d pod x node)\n", "endpoint ready -> in another node's ipcache p50/p99/max:",
		percentile(add, 50), percentile(add, 99), percentile(add, 100), len(add))
	fmt.Fprintf(&sb, "%-52s %.1f / %.1f / %.1f ms (deletes on all nodes at once)\n", "endpoint deleted -> out of another's p50/p99/max:",
		percentile(remove, 50), percentile(remove, 99), percentile(remove, 100))
	fmt.Fprintf(&sb, "API server writes per pod start: %.2f (%s)\n", float64(total(startWrites))/float64(pods), writesText(startWrites))
	fmt.Fprintf(&sb, "API server writes per pod delete: %.2f (%s)\n", float64(total(delWrites))/float64(pods), writesText(delWrites))
	end := make([]map[string]uint64, nNodes)
	for k, ag := range nodes {
		end[k] = k8sEvents(b, ag)
	}
	var worst float64
	for k := range nodes {
		s, d := map[string]uint64{}, map[string]uint64{}
		var sum uint64
		for r, c := range afterStart[k] {
			s[r] = c - before[k][r]
			d[r] = end[k][r] - c
			sum += end[k][r] - before[k][r]
		}
		perChange := float64(sum) / float64(2*pods)
		worst = max(worst, perChange)
		fmt.Fprintf(&sb, "node-%d: watch events per pod change in the cluster %.2f; starts: %s; deletes: %s\n", k, perChange, receivedText(s), receivedText(d))
		fmt.Fprintf(&sb, "node-%d: Go heap per remote endpoint %d B (%d remote), per local endpoint %d B\n", k,
			remoteHeap[k]/int64((nNodes-1)*m), (nNodes-1)*m, localHeap[k]/int64(m))
	}
	printResults(b, sb.String())
	b.ReportMetric(percentile(add, 50), "add-p50-ms")
	b.ReportMetric(percentile(add, 99), "add-p99-ms")
	b.ReportMetric(worst, "events-per-pod-change")
}
