package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/internal/kubetest"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// BenchmarkIdentityAllocation measures cluster-wide identity allocation
// through a real API server (Kubernetes mode's backend: a claim Lease and
// a CiliumIdentity per new label set) with 1, 2 and 4 allocators, each an
// agent with its own connection and caches:
//
//   - shared: every allocator allocates the same new label sets at once
//     (the race of pods of one new workload starting on several nodes);
//     identities/s counts the label sets, each one identity in the end;
//   - disjoint: each allocator its own new label sets (throughput).
//
// A new identity costs three requests (create the claim, create the
// CiliumIdentity, read the claim back); each agent's client is limited to
// 50 requests/s (burst 100, k8s/client.New), which bounds one allocator
// at about 20 identities/s once the burst is spent.
//
// MEMBRANE_BENCH_IDENTITIES label sets per run (default 200).
func BenchmarkIdentityAllocation(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a kube-apiserver")
	}
	b.ReportMetric(0, "ns/op")
	n := envInt("MEMBRANE_BENCH_IDENTITIES", 200)
	cluster := kubetest.Start(b)
	cluster.Kubectl(b, "apply", "-f", "../../install/kubernetes/crds/")
	cluster.Kubectl(b, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumidentities.cilium.io")
	cluster.Kubectl(b, "create", "namespace", identity.ClaimNamespace)

	run := 0
	for _, agents := range []int{1, 2, 4} {
		allocs := make([]*identity.ClusterAllocator, agents)
		for i := range allocs {
			cs, err := k8sclient.New(cluster.Kubeconfig(), fmt.Sprintf("bench-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			allocs[i] = identity.NewClusterAllocator(cs, tables.MinClusterIdentity, tables.MaxClusterIdentity)
			ctx, cancel := context.WithCancel(context.Background())
			b.Cleanup(cancel)
			allocs[i].Start(ctx)
			if !allocs[i].WaitSynced(ctxFor(b, time.Minute)) {
				b.Fatal("caches not synced")
			}
		}
		for _, shared := range []bool{true, false} {
			run++
			sets := make([][]labels.Labels, agents)
			for i := range sets {
				for j := range n {
					app := fmt.Sprintf("r%d-%d", run, j)
					if !shared {
						app = fmt.Sprintf("r%d-a%d-%d", run, i, j)
					}
					sets[i] = append(sets[i], labels.New(labels.Label{Source: labels.SourceK8s, Key: "app", Value: app}))
				}
			}
			ctx := ctxFor(b, 10*time.Minute)
			var wg sync.WaitGroup
			errs := make(chan error, agents)
			start := time.Now()
			for i, a := range allocs {
				wg.Go(func() {
					for _, ls := range sets[i] {
						if _, _, err := a.Allocate(ctx, ls); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			total := n
			mode := "shared"
			if !shared {
				total, mode = n*agents, "disjoint"
			}
			b.ReportMetric(float64(total)/elapsed.Seconds(), fmt.Sprintf("identities/s-%d-agents-%s", agents, mode))
		}
	}
}
