package remoteendpoints

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/statedb/tables"
)

// BenchmarkMemoryPerRemoteEndpoint reports the heap the cell holds per
// remote endpoint: the slimmed CEP in the informer's cache, the map of
// addresses to claiming CEPs, and its ipcache rows, for 20,000 dual-stack endpoints
// (the informer's copy as decoded is garbage once transformed). Not the
// BPF map (kernel memory, 1 entry per address) nor the reconciler's
// status. Run: go test -run '^$' -bench Memory ./cells/k8s/remoteendpoints/
func BenchmarkMemoryPerRemoteEndpoint(b *testing.B) {
	for _, part := range []string{"both", "cache", "ipcache"} {
		b.Run(part, func(b *testing.B) { memoryPerRemoteEndpoint(b, part != "ipcache", part != "cache") })
	}
}

func memoryPerRemoteEndpoint(b *testing.B, withCache, withRows bool) {
	const n = 20000
	var sink []any
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		db := statedb.New()
		ipc, err := tables.NewIPCacheTable(db)
		if err != nil {
			b.Fatal(err)
		}
		store := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
		claims := newClaimants()
		wtxn := db.WriteTxn(ipc)
		for i := range n {
			v4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			v6 := netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(i), 14: byte(i >> 8), 13: byte(i >> 16)})
			full := &v2.CiliumEndpoint{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: "namespace-" + fmt.Sprint(i%50), Name: fmt.Sprintf("deployment-5d8f7c9b4-%05d", i),
					UID: types.UID(fmt.Sprintf("8a4c2a6e-0000-4000-8000-%012d", i)), ResourceVersion: fmt.Sprint(100000 + i),
					CreationTimestamp: metav1.NewTime(time.Unix(int64(i), 0)),
					Labels:            map[string]string{"membrane.io/node": fmt.Sprintf("node-%d", i%1000)},
				},
				Status: v2.EndpointStatus{
					ID:       int64(i % 4096),
					Identity: &v2.EndpointIdentity{ID: int64(1000 + i%200), Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=ns"}},
					Networking: &v2.EndpointNetworking{
						Addressing: []v2.AddressPair{{IPv4: v4.String(), IPv6: v6.String()}}, NodeIP: fmt.Sprintf("node-%d", i%1000),
					},
					State: "ready",
				},
			}
			if withCache {
				s, _ := slim(full)
				if err := store.Add(s); err != nil {
					b.Fatal(err)
				}
				r := s.(*record)
				claims.move(r.key, nil, r.prefixes())
			}
			for _, p := range []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)} {
				if !withRows {
					break
				}
				ipc.Insert(wtxn, &tables.IPCacheEntry{Prefix: p, Identity: tables.NumericIdentity(1000 + i%200), Source: Source, Status: reconciler.StatusDone()})
			}
		}
		wtxn.Commit()

		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/endpoint")
		sink = append(sink, store, claims, db)
	}
	runtime.KeepAlive(sink)
}
