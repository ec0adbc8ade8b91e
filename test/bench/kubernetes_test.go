package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// BenchmarkCNIAddKubernetes times `cnitool add` in Kubernetes mode (a real
// kube-apiserver, the agent watching it) for a pod whose identity exists
// and for one that needs a new identity, against the same two kinds of
// pods on an agent in local mode and against ptp, all in one run, the
// five alternated pod by pod. Every Pod object (and local pod labels) is
// in place before the clock starts: no kubelet here, so the time is the
// runtime's wait for the CNI call.
//
// Then one pod lifecycle (ADD, ready, DEL) per kind on the Kubernetes
// agent alone, counting the API server writes it causes (watch events on
// every kind the agent writes: CiliumEndpoints, CiliumIdentities, Leases
// in membrane-system, Events, CiliumNodes) and the watch events the agent
// receives per pod start (its k8s-status counters). Cilium writes one
// CiliumEndpoint create and two updates per pod start.
func BenchmarkCNIAddKubernetes(b *testing.B) {
	setup(b)
	n := envInt("MEMBRANE_BENCH_PODS", 100)
	cluster := kubetest.Start(b)
	cluster.Kubectl(b, "create", "namespace", "membrane-system") // identity claims
	const node = "bench-node"
	k8s := startAgent(b, "--datapath-mode", "tc", "--k8s-kubeconfig", cluster.Kubeconfig(), "--node-name", node)
	local := startAgent(b, "--datapath-mode", "tc")

	type variant struct {
		name string
		nw   *network
		a    *agent // nil: ptp
		k8s  bool
		new  bool // a new identity per pod
		pods []*pod
		add  []float64
	}
	vs := []*variant{
		{name: "k8s, identity exists", nw: membraneNetwork(b, k8s), a: k8s, k8s: true},
		{name: "k8s, new identity", nw: membraneNetwork(b, k8s), a: k8s, k8s: true, new: true},
		{name: "local, identity exists", nw: membraneNetwork(b, local), a: local},
		{name: "local, new identity", nw: membraneNetwork(b, local), a: local, new: true},
		{name: "ptp", nw: ptpNetwork(b)},
	}
	labelsOf := func(v *variant, j int) map[string]string {
		if v.new {
			return map[string]string{"app": "bench-new", "idx": fmt.Sprint(j)}
		}
		return map[string]string{"app": "bench"}
	}
	var manifest strings.Builder
	for vi, v := range vs {
		for j := range n + 1 { // pod 0 warms up: the "exists" identity, the agent's first ADD
			p := newPod(b, fmt.Sprintf("v%d-%d", vi, j))
			v.pods = append(v.pods, p)
			ls := labelsOf(v, j)
			switch {
			case v.k8s:
				fmt.Fprintf(&manifest, "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: default, name: %s, labels: {%s}}\nspec: {nodeName: %s, containers: [{name: c, image: pause}]}\n",
					p.Name, yamlMap(ls), node)
			case v.a != nil:
				v.a.putPod("default", p.Name, ls)
			}
		}
	}
	cluster.Apply(b, manifest.String())
	last := vs[1].pods[n]
	e2eutil.Eventually(b, 2*time.Minute, "the agent has every Pod object", func() error {
		_, err := k8s.Client.GetPod(ctxFor(b, 5*time.Second), "default", last.Name)
		return err
	})
	// The runtime passes the Pod's UID: the agent writes a CiliumEndpoint
	// for each of these pods, as it would in a cluster.
	uids := podUIDs(b, cluster)
	for _, v := range vs[:2] {
		for _, p := range v.pods {
			p.UID = uids[p.Name]
		}
	}

	for _, v := range vs {
		if _, err := v.nw.add(v.pods[0]); err != nil {
			b.Fatal(err)
		}
	}
	for j := 1; j <= n; j++ {
		for k := range vs {
			v := vs[(j+k)%len(vs)] // rotate who goes first
			d, err := v.nw.add(v.pods[j])
			if err != nil {
				b.Fatal(err)
			}
			v.add = append(v.add, ms(d))
		}
	}
	for _, v := range vs {
		for _, p := range v.pods {
			if _, err := v.nw.del(p); err != nil {
				b.Fatal(err)
			}
			p.remove()
		}
	}

	// One lifecycle of each kind on the Kubernetes agent, alone.
	cs, err := k8sclient.New(cluster.Kubeconfig(), node)
	if err != nil {
		b.Fatal(err)
	}
	lifecycle := func(name string, ls map[string]string) (writes map[string]int, received map[string]uint64) {
		p := newPod(b, name)
		cluster.Apply(b, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: default, name: %s, labels: {%s}}\nspec: {nodeName: %s, containers: [{name: c, image: pause}]}\n",
			name, yamlMap(ls), node))
		e2eutil.Eventually(b, time.Minute, "the agent has pod "+name, func() error {
			_, err := k8s.Client.GetPod(ctxFor(b, 5*time.Second), "default", name)
			return err
		})
		p.UID = podUIDs(b, cluster)[name]
		before := k8sEvents(b, k8s)
		w := watchWrites(b, cs)
		if _, err := vs[0].nw.add(p); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second) // let coalesced writes land
		received = k8sEvents(b, k8s)
		for r, c := range before {
			received[r] -= c
		}
		if _, err := vs[0].nw.del(p); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		p.remove()
		return w.stop(), received
	}
	exists, existsRecv := lifecycle("life-exists", map[string]string{"app": "bench"})
	fresh, freshRecv := lifecycle("life-new", map[string]string{"app": "bench-life-new"})

	ptp := vs[4].add
	var sb strings.Builder
	fmt.Fprintf(&sb, "cnitool ADD in Kubernetes mode vs local mode vs ptp+host-local, %d pods each, alternated, same run\n", n)
	fmt.Fprintf(&sb, "%-26s %-22s %s\n", "pods", "ADD p50 / p99", "ratio to ptp p50 / p99")
	for _, v := range vs {
		fmt.Fprintf(&sb, "%-26s %-22s %.2f / %.2f\n", v.name,
			fmt.Sprintf("%.1f / %.1f ms", percentile(v.add, 50), percentile(v.add, 99)),
			percentile(v.add, 50)/percentile(ptp, 50), percentile(v.add, 99)/percentile(ptp, 99))
	}
	fmt.Fprintf(&sb, "k8s/local ratio p50: identity exists %.2f, new identity %.2f\n",
		percentile(vs[0].add, 50)/percentile(vs[2].add, 50), percentile(vs[1].add, 50)/percentile(vs[3].add, 50))
	fmt.Fprintf(&sb, "\nAPI server writes by the agent per pod lifecycle (ADD..DEL); Cilium: 1 CEP create + 2 updates at start\n"+
		"(gc-lease: the identity collector leader's renewals, by time, not counted)\n")
	fmt.Fprintf(&sb, "%-18s %s\n", "identity exists:", writesText(exists))
	fmt.Fprintf(&sb, "%-18s %s\n", "new identity:", writesText(fresh))
	fmt.Fprintf(&sb, "watch events the agent received per pod start (the Pod object's creation excluded)\n")
	fmt.Fprintf(&sb, "%-18s %s\n", "identity exists:", receivedText(existsRecv))
	fmt.Fprintf(&sb, "%-18s %s\n", "new identity:", receivedText(freshRecv))
	printResults(b, sb.String())

	for i, v := range vs {
		b.ReportMetric(percentile(v.add, 50), fmt.Sprintf("v%d-add-p50-ms", i))
		b.ReportMetric(percentile(v.add, 99), fmt.Sprintf("v%d-add-p99-ms", i))
	}
	b.ReportMetric(float64(total(exists)), "writes-per-pod-identity-exists")
	b.ReportMetric(float64(total(fresh)), "writes-per-pod-new-identity")
}

// podUIDs maps the name of each Pod of namespace default to its UID.
func podUIDs(b *testing.B, c *kubetest.Cluster) map[string]string {
	out := map[string]string{}
	list := c.Kubectl(b, "get", "pods", "-n", "default", "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}`)
	for _, line := range strings.Fields(list) {
		if name, uid, ok := strings.Cut(line, "="); ok {
			out[name] = uid
		}
	}
	return out
}

func yamlMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %q", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// k8sEvents is the agent's count of watch events received per resource.
func k8sEvents(b *testing.B, a *agent) map[string]uint64 {
	st, err := a.Client.Healthz(ctxFor(b, 5*time.Second))
	if err != nil || st.Kubernetes == nil {
		b.Fatalf("agent status: %v (kubernetes section: %v)", err, st != nil && st.Kubernetes != nil)
	}
	out := map[string]uint64{}
	for _, c := range st.Kubernetes.Caches {
		out[c.Name] = c.Events
	}
	return out
}

// writeWatch counts the writes to the kinds the agent writes, as watch
// events ("ciliumendpoints ADDED" ...).
type writeWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts map[string]int
}

func watchWrites(b *testing.B, cs *k8sclient.Clientset) *writeWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeWatch{cancel: cancel, counts: map[string]int{}}
	// Each watch starts at the resourceVersion of a list made now: a
	// watch without one would replay the current objects as ADDED.
	from := func(list func(metav1.ListOptions) (string, error), w func(metav1.ListOptions) (watch.Interface, error)) func() (watch.Interface, error) {
		return func() (watch.Interface, error) {
			rv, err := list(metav1.ListOptions{Limit: 1})
			if err != nil {
				return nil, err
			}
			return w(metav1.ListOptions{ResourceVersion: rv})
		}
	}
	ceps, ids, nodes := cs.CiliumV2.CiliumEndpoints(""), cs.CiliumV2.CiliumIdentities(), cs.CiliumV2.CiliumNodes()
	leases, events := cs.CoordinationV1().Leases("membrane-system"), cs.CoreV1().Events("")
	starts := map[string]func() (watch.Interface, error){
		"ciliumendpoints": from(func(o metav1.ListOptions) (string, error) { l, err := ceps.List(ctx, o); return rvOf(l, err) },
			func(o metav1.ListOptions) (watch.Interface, error) { return ceps.Watch(ctx, o) }),
		"ciliumidentities": from(func(o metav1.ListOptions) (string, error) { l, err := ids.List(ctx, o); return rvOf(l, err) },
			func(o metav1.ListOptions) (watch.Interface, error) { return ids.Watch(ctx, o) }),
		"ciliumnodes": from(func(o metav1.ListOptions) (string, error) { l, err := nodes.List(ctx, o); return rvOf(l, err) },
			func(o metav1.ListOptions) (watch.Interface, error) { return nodes.Watch(ctx, o) }),
		"leases": from(func(o metav1.ListOptions) (string, error) { l, err := leases.List(ctx, o); return rvOf(l, err) },
			func(o metav1.ListOptions) (watch.Interface, error) { return leases.Watch(ctx, o) }),
		"events": from(func(o metav1.ListOptions) (string, error) { l, err := events.List(ctx, o); return rvOf(l, err) },
			func(o metav1.ListOptions) (watch.Interface, error) { return events.Watch(ctx, o) }),
	}
	for name, start := range starts {
		wi, err := start()
		if err != nil {
			b.Fatalf("watch %s: %v", name, err)
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer wi.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-wi.ResultChan():
					if !ok {
						return
					}
					if ev.Type == watch.Bookmark || ev.Type == watch.Error {
						continue
					}
					kind := name
					if m, err := meta.Accessor(ev.Object); err == nil && name == "leases" && m.GetName() == gcLease {
						kind = "gc-lease" // the leader's renewals: by time, not by pod
					}
					w.mu.Lock()
					w.counts[kind+" "+string(ev.Type)]++
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

// gcLease is the identity garbage collector's leader Lease
// (cells/identity GCLease): renewed every few seconds, whatever the pods do.
const gcLease = "membrane-identity-gc"

// rvOf is the resourceVersion of a list.
func rvOf(l metav1.ListInterface, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return l.GetResourceVersion(), nil
}

func (w *writeWatch) stop() map[string]int {
	w.cancel()
	w.wg.Wait()
	return w.counts
}

// total counts the writes a pod caused: not the leader's renewals.
func total(m map[string]int) int {
	n := 0
	for k, c := range m {
		if strings.HasPrefix(k, "gc-lease ") {
			continue
		}
		n += c
	}
	return n
}

func writesText(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return fmt.Sprintf("%d (%s)", total(m), strings.Join(parts, ", "))
}

func receivedText(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
