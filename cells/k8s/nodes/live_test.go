package nodes_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/ipam"
	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	"github.com/membrane-net/membrane/cells/k8s/nodes"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/kubetest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Against a real API server: the agent creates its node's CiliumNode
// (and creates it again when deleted), writes every CiliumNode into the
// nodes table, refuses the younger of two nodes whose pod CIDRs overlap
// with a Warning event, and lifts the refusal when the conflict goes.
func TestCiliumNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real API server: skipped with -short")
	}
	cluster := kubetest.Start(t)
	var db *statedb.DB
	var tbl statedb.Table[*tables.Node]
	h := celltest.New(t, t.TempDir(), k8scell.Cell, crds.Cell, nodes.Cell,
		cell.Provide(func() ipam.Config { return ipam.Config{PodCIDR: "10.1.0.0/24"} }),
		cell.Invoke(func(d *statedb.DB, n statedb.Table[*tables.Node]) { db, tbl = d, n }))
	hive.AddConfigOverride(h.Hive, func(c *k8scell.Config) { c.K8sKubeconfig, c.NodeName = cluster.Kubeconfig(), "node-1" })
	hive.AddConfigOverride(h.Hive, func(c *nodes.Config) { c.NodeIP = []string{"192.168.1.1"} })
	h.StartTest()

	rows := func() map[string]*tables.Node {
		out := map[string]*tables.Node{}
		for n := range tbl.All(db.ReadTxn()) {
			out[n.Name] = n
		}
		return out
	}
	e2eutil.Eventually(t, time.Minute, "node-1's CiliumNode", func() error {
		out, _, err := cluster.KubectlErr("get", "ciliumnode", "node-1", "-o", "jsonpath={.spec.addresses[0].type}={.spec.addresses[0].ip} {.spec.ipam.podCIDRs}")
		if err != nil || out != `InternalIP=192.168.1.1 ["10.1.0.0/24"]` {
			return fmt.Errorf("%q %v", out, err)
		}
		if r := rows()["node-1"]; r == nil || !r.Local {
			return fmt.Errorf("row %+v", r)
		}
		return nil
	})

	cn := func(name, ip, cidr string) string {
		return fmt.Sprintf("apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: %s}\nspec:\n  addresses: [{type: InternalIP, ip: %s}]\n  ipam: {podCIDRs: [%s]}\n", name, ip, cidr)
	}
	// node-2 is the older (or, created within the same second, first by
	// name): it keeps the CIDR.
	cluster.Apply(t, cn("node-2", "192.168.1.2", "10.2.0.0/24"))
	cluster.Apply(t, cn("node-3", "192.168.1.3", "10.2.0.128/25"))
	e2eutil.Eventually(t, time.Minute, "node-2 routed, node-3 refused", func() error {
		r := rows()
		switch {
		case r["node-2"] == nil || !r["node-2"].Routed():
			return fmt.Errorf("node-2: %+v", r["node-2"])
		case r["node-3"] == nil || !strings.Contains(r["node-3"].Refused, "of node node-2"):
			return fmt.Errorf("node-3: %+v", r["node-3"])
		}
		return nil
	})
	e2eutil.Eventually(t, time.Minute, "PodCIDROverlap event", func() error {
		if out := cluster.Kubectl(t, "get", "events", "-A", "--field-selector", "involvedObject.name=node-3,reason="+nodes.ReasonOverlap, "-o", "name"); strings.TrimSpace(out) == "" {
			return fmt.Errorf("none")
		}
		return nil
	})

	// Deleted behind the agent's back: created again.
	cluster.Kubectl(t, "delete", "ciliumnode", "node-1")
	e2eutil.Eventually(t, time.Minute, "node-1's CiliumNode created again", func() error {
		_, _, err := cluster.KubectlErr("get", "ciliumnode", "node-1")
		return err
	})
	// node-2 leaves: its row goes, node-3 is routed.
	cluster.Kubectl(t, "delete", "ciliumnode", "node-2")
	e2eutil.Eventually(t, time.Minute, "node-2 gone, node-3 routed", func() error {
		r := rows()
		if r["node-2"] != nil || r["node-3"] == nil || !r["node-3"].Routed() {
			return fmt.Errorf("rows %+v", r)
		}
		return nil
	})
}
