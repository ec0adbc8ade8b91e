package remoteendpoints_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/remoteendpoints"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/statedb/tables"
)

func cepYAML(name, node, ipv4 string, id int) string {
	return fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {namespace: default, name: %s, labels: {membrane.io/node: %s}}
status: {id: 1, identity: {id: %d}, networking: {addressing: [{ipv4: %s}], node: %s}, state: ready}
`, name, node, id, ipv4, node)
}

// Against a real API server, the cell alone on node-a: while the API
// server is down at start the ipcache stays uninitialized (the loader
// prunes nothing) and a row already there (as restored) is left; once
// the CEPs are listed the table is initialized with exactly the other
// nodes' CEPs (node-a's own is not remote, the stale row is gone); then
// events apply.
func TestInitializerWaitsForTheCEPs(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real API server: skipped with -short")
	}
	cluster := kubetest.Start(t)
	cluster.Kubectl(t, "apply", "-f", "../../../install/kubernetes/crds")
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ciliumendpoints.cilium.io")
	cluster.Apply(t, cepYAML("b1", "node-b", "10.9.0.1", 1001)+"---\n"+cepYAML("a1", "node-a", "10.8.0.1", 1002))
	cluster.StopAPIServer()

	var (
		db     *statedb.DB
		ipc    statedb.RWTable[*tables.IPCacheEntry]
		nodes  statedb.RWTable[*tables.Node]
		idents k8scell.EndpointIdentities
	)
	h := celltest.New(t, "", k8scell.Cell, remoteendpoints.Cell,
		cell.Invoke(func(d *statedb.DB, t statedb.RWTable[*tables.IPCacheEntry], n statedb.RWTable[*tables.Node], e k8scell.EndpointIdentities) {
			db, ipc, nodes, idents = d, t, n, e
		}))
	hive.AddConfigOverride(h.Hive, func(c *k8scell.Config) { c.K8sKubeconfig, c.NodeName = cluster.Kubeconfig(), "node-a" })
	h.StartTest()
	t.Cleanup(h.StopTest)

	// The nodes of the cluster, as k8s-nodes (not in this hive) lists
	// them: a CEP counts only while its node is one.
	wtxn := db.WriteTxn(nodes)
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		nodes.Insert(wtxn, &tables.Node{Name: n, Local: n == "node-a"})
	}
	wtxn.Commit()

	stale := netip.MustParsePrefix("10.9.9.9/32")
	wtxn = db.WriteTxn(ipc)
	ipc.Insert(wtxn, &tables.IPCacheEntry{Prefix: stale, Identity: 7, Source: remoteendpoints.Source, Status: reconciler.StatusPending()})
	wtxn.Commit()

	// The API server down: pending, for as long as it is down; the
	// identity garbage collector is told the CEPs are not listed.
	if idents.HasSynced() {
		t.Error("EndpointIdentities synced with the API server down")
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		txn := db.ReadTxn()
		if ok, _ := ipc.Initialized(txn); ok || !slices.Contains(ipc.PendingInitializers(txn), "k8s-remote-endpoints") {
			t.Fatalf("API server down: ipcache initialized %v, pending %v; want k8s-remote-endpoints pending", ok, ipc.PendingInitializers(txn))
		}
	}

	rows := func() map[string]string {
		out := map[string]string{}
		for r := range ipc.All(db.ReadTxn()) {
			out[r.Prefix.String()] = fmt.Sprintf("%s/%d", r.Source, r.Identity)
		}
		return out
	}
	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, time.Minute, "ipcache initialized", func() error {
		txn := db.ReadTxn()
		if ok, _ := ipc.Initialized(txn); !ok {
			return fmt.Errorf("pending %v", ipc.PendingInitializers(txn))
		}
		return nil
	})
	if got := rows(); len(got) != 1 || got["10.9.0.1/32"] != "remote/1001" {
		t.Fatalf("initialized with rows %v, want only 10.9.0.1/32 remote/1001", got)
	}
	// The identities in use the garbage collector sees: the other nodes'
	// CEPs' (this node's own, 1002, are its local endpoints' to vouch for).
	used := map[tables.NumericIdentity]bool{}
	if !idents.HasSynced() {
		t.Error("EndpointIdentities not synced once the ipcache is initialized")
	}
	idents.AddIdentities(used)
	if len(used) != 1 || !used[1001] {
		t.Errorf("identities in use %v, want only 1001", used)
	}

	cluster.Apply(t, cepYAML("b2", "node-c", "10.10.0.1", 1003))
	cluster.Kubectl(t, "delete", "cep", "-n", "default", "b1")
	e2eutil.Eventually(t, 30*time.Second, "events applied", func() error {
		if got := rows(); len(got) != 1 || got["10.10.0.1/32"] != "remote/1003" {
			return fmt.Errorf("rows %v", got)
		}
		return nil
	})
}
