package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/internal/testutil"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// BenchmarkRemoteEndpointPropagation runs two agents (nodes node-a and
// node-b) on one real kube-apiserver and times, pod by pod, how long a
// pod endpoint made ready on node B (PUT /v1/endpoint with a sync build:
// what CNI ADD waits for) takes to appear in node A's pinned ipcache map
// with its identity, and how long its removal takes after the endpoint
// is deleted on B. It counts the CiliumEndpoint writes per pod lifecycle
// (watch events seen by a cluster-wide watcher) and the watch events
// node A's remote-endpoints watcher received per pod lifecycle, and the
// size of one CiliumEndpoint as the API server serves it.
// MEMBRANE_BENCH_PODS sets the number of pods (default 100).
func BenchmarkRemoteEndpointPropagation(b *testing.B) {
	setup(b)
	n := envInt("MEMBRANE_BENCH_PODS", 100)
	cluster := kubetest.Start(b)
	cluster.Kubectl(b, "create", "namespace", "membrane-system") // identity claims
	bpf := testutil.BPFDir(b)
	a, nb := startNode(b, cluster, bpf, "node-a"), startNode(b, cluster, bpf, "node-b")

	var manifest strings.Builder
	for i := range n + 1 {
		fmt.Fprintf(&manifest, "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: default, name: r-%d, labels: {app: remote-bench}}\nspec: {nodeName: node-b, containers: [{name: c, image: pause}]}\n", i)
	}
	cluster.Apply(b, manifest.String())
	for _, ag := range []*agent{a, nb} {
		ag.waitRemoteSynced(2*time.Minute, nb, fmt.Sprintf("r-%d", n))
	}
	ipc, err := maps.OpenPinned(a.BPFRoot, maps.IPCacheMapName)
	if err != nil {
		b.Fatal(err)
	}
	defer ipc.Close()
	cs, err := k8sclient.New(cluster.Kubeconfig(), "bench")
	if err != nil {
		b.Fatal(err)
	}

	addr := nb.PodCIDR.Addr().Next()
	put := func(i int) (*models.Endpoint, netip.Prefix) {
		addr = addr.Next()
		ep, err := nb.Client.PutEndpoint(ctxFor(b, 30*time.Second), "0", &models.EndpointChangeRequest{
			ContainerID: fmt.Sprintf("remote-bench-%d", i), ContainerInterfaceName: "eth0",
			Addressing: &models.AddressPair{IPv4: addr.String()}, K8sNamespace: "default",
			K8sPodName: fmt.Sprintf("r-%d", i), SyncBuildEndpoint: true,
		})
		if err != nil {
			b.Fatal(err)
		}
		if ep.State != models.StateReady || ep.Identity == nil {
			b.Fatalf("endpoint r-%d is %s after a sync build", i, ep.State)
		}
		return ep, netip.PrefixFrom(addr, 32)
	}
	// wait polls A's pinned map until p maps to id (present) or is gone.
	wait := func(p netip.Prefix, id uint32, present bool) time.Duration {
		t0 := time.Now()
		key := maps.NewIPCacheKey(p)
		for time.Since(t0) < 30*time.Second {
			var v maps.IPCacheValue
			err := ipc.Lookup(&key, &v)
			found := err == nil && v.Identity == id
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				b.Fatal(err)
			}
			if found == present {
				return time.Since(t0)
			}
			time.Sleep(200 * time.Microsecond)
		}
		b.Fatalf("%s -> %d present=%v on node A: not within 30s", p, id, present)
		return 0
	}
	del := func(ep *models.Endpoint) {
		if err := nb.Client.DeleteEndpoint(ctxFor(b, 30*time.Second), fmt.Sprint(ep.ID)); err != nil {
			b.Fatal(err)
		}
	}

	// Warm up: the identity exists, both watches are established.
	ep0, p0 := put(0)
	wait(p0, ep0.Identity.ID, true)
	obj, err := cs.CiliumV2.CiliumEndpoints("default").Get(ctxFor(b, 5*time.Second), "r-0", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(obj)
	del(ep0)
	wait(p0, ep0.Identity.ID, false)

	before := k8sEvents(b, a)
	w := watchWrites(b, cs)
	seen := watchCEPTimes(b, cs)
	var add, remove, write, deliver []float64
	ready, inA := make([]time.Time, n+1), make([]time.Time, n+1)
	for i := 1; i <= n; i++ {
		ep, p := put(i)
		ready[i] = time.Now()
		add = append(add, ms(wait(p, ep.Identity.ID, true)))
		inA[i] = time.Now()
		del(ep)
		remove = append(remove, ms(wait(p, ep.Identity.ID, false)))
	}
	time.Sleep(2 * time.Second) // let the last events land
	writes := w.stop()
	seen.stop()
	// The split: B's write (ready until a watcher sees the CEP) and the
	// rest (the event until A's map has it; negative when A was first).
	for i := 1; i <= n; i++ {
		if t, ok := seen.at(fmt.Sprintf("r-%d ADDED", i)); ok {
			write = append(write, ms(t.Sub(ready[i])))
			deliver = append(deliver, ms(inA[i].Sub(t)))
		}
	}
	after := k8sEvents(b, a)
	received := after["remote-ciliumendpoints"] - before["remote-ciliumendpoints"]

	var sb strings.Builder
	fmt.Fprintf(&sb, "remote endpoint propagation, node B -> node A, %d pods, one at a time, loopback API server\n", n)
	fmt.Fprintf(&sb, "%-44s %.1f / %.1f / %.1f ms\n", "endpoint ready on B -> in A's ipcache p50/p99/max:",
		percentile(add, 50), percentile(add, 99), percentile(add, 100))
	fmt.Fprintf(&sb, "%-44s %.1f / %.1f / %.1f ms\n", "endpoint deleted on B -> out of A's p50/p99/max:",
		percentile(remove, 50), percentile(remove, 99), percentile(remove, 100))
	fmt.Fprintf(&sb, "%-44s %.1f / %.1f ms (%d pods)\n", "  of which ready -> CEP created (B) p50/p99:", percentile(write, 50), percentile(write, 99), len(write))
	fmt.Fprintf(&sb, "%-44s %.1f / %.1f ms\n", "  and CEP event -> in A's pinned map p50/p99:", percentile(deliver, 50), percentile(deliver, 99))
	fmt.Fprintf(&sb, "API server writes per pod lifecycle: %.2f (%s)\n", float64(total(writes))/float64(n), writesText(writes))
	fmt.Fprintf(&sb, "watch events node A's remote-endpoints watcher received per pod lifecycle: %.2f\n", float64(received)/float64(n))
	fmt.Fprintf(&sb, "one CiliumEndpoint as JSON: %d bytes\n", len(raw))
	printResults(b, sb.String())
	b.ReportMetric(percentile(add, 50), "add-p50-ms")
	b.ReportMetric(percentile(add, 99), "add-p99-ms")
	b.ReportMetric(float64(received)/float64(n), "events-per-pod")
}

// startNode runs an agent in Kubernetes mode as node NAME, with a bpf
// root of its own under bpf and a /22 pod CIDR.
func startNode(b *testing.B, cluster *kubetest.Cluster, bpf, node string) *agent {
	dir := filepath.Join(bpf, node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return &agent{b: b, Agent: e2eutil.StartAgent(b, e2eutil.AgentConfig{
		Binary: bins.Agent, TempPattern: "mbbench", Pool: e2eutil.PoolBench, Bits: 22,
		BPFRoot: dir, ReadyWithin: 30 * time.Second,
		Extra: []string{"--datapath-mode", "tc", "--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node},
	})}
}

// waitRemoteSynced waits until the agent has listed the other nodes'
// CiliumEndpoints and knows the Pod default/lastPod (of podAgent's node,
// the last one the benchmark applied: the agent has every Pod before).
func (a *agent) waitRemoteSynced(within time.Duration, podAgent *agent, lastPod string) {
	b := a.b
	e2eutil.Eventually(b, within, "remote endpoints synced and every Pod known", func() error {
		st, err := a.Client.Healthz(ctxFor(b, 5*time.Second))
		if err != nil || st.Kubernetes == nil {
			return fmt.Errorf("status: %v", err)
		}
		for _, c := range st.Kubernetes.Caches {
			if c.Name == "remote-ciliumendpoints" && c.Synced {
				_, err := podAgent.Client.GetPod(ctxFor(b, 5*time.Second), "default", lastPod)
				return err
			}
		}
		return fmt.Errorf("remote-ciliumendpoints not synced")
	})
}

// cepTimes records when a watcher of its own sees each CEP event
// ("NAME ADDED"), as an agent's watch would.
type cepTimes struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	times  map[string]time.Time
}

func watchCEPTimes(b *testing.B, cs *k8sclient.Clientset) *cepTimes {
	ctx, cancel := context.WithCancel(context.Background())
	wi, err := cs.CiliumV2.CiliumEndpoints("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	c := &cepTimes{cancel: cancel, done: make(chan struct{}), times: map[string]time.Time{}}
	go func() {
		defer close(c.done)
		defer wi.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-wi.ResultChan():
				if !ok {
					return
				}
				if o, ok := ev.Object.(metav1.Object); ok {
					c.mu.Lock()
					c.times[o.GetName()+" "+string(ev.Type)] = time.Now()
					c.mu.Unlock()
				}
			}
		}
	}()
	return c
}

func (c *cepTimes) at(key string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.times[key]
	return t, ok
}

func (c *cepTimes) stop() { c.cancel(); <-c.done }
