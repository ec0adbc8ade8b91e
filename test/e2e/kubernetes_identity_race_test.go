package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/testutil"
)

// Two agents (two nodes: two state dirs, two bpf roots, one API server)
// allocate the same 50 new label sets at the same moment: the cluster ends
// with exactly 50 CiliumIdentities for them, and both agents give each
// label set the same number. Cilium can mint two identities for one label
// set in this race (cilium/cilium#25251). The endpoints are made through
// the API without veths: what is raced is the allocation, not the
// datapath.
func TestKubernetesConcurrentIdentityAllocation(t *testing.T) {
	setup(t)
	const sets = 50
	cluster := kubeCluster(t, "race")
	nodes := []string{"node-1", "node-2"}
	agents := make([]*agent, len(nodes))
	bpf := testutil.BPFDir(t)
	for i, node := range nodes {
		agents[i] = startNodeAgent(t, cluster, bpf, node, agentOpts{})
	}
	waitCRDs(t, cluster)

	// One Pod object per label set and node, in one apply.
	var m strings.Builder
	for _, node := range nodes {
		for s := range sets {
			fmt.Fprintf(&m, "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: race, name: %s-%d, labels: {set: s%d}}\n"+
				"spec: {nodeName: %s, containers: [{name: c, image: registry.k8s.io/pause:3.10}]}\n", node, s, s, node)
		}
	}
	cluster.Apply(t, m.String())

	// Every endpoint of both nodes at once.
	type result struct {
		ep  *models.Endpoint
		err error
	}
	results := make([][]result, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		results[i] = make([]result, sets)
		a := agents[i]
		for s := range sets {
			wg.Go(func() {
				addr := a.PodCIDR.Addr()
				for range s + 2 {
					addr = addr.Next()
				}
				ep, err := a.Client.PutEndpoint(e2eutil.Context(t), "0", &models.EndpointChangeRequest{
					ContainerID: fmt.Sprintf("race-%s-%d", node, s), ContainerInterfaceName: "eth0",
					Addressing: &models.AddressPair{IPv4: addr.String()}, K8sNamespace: "race",
					K8sPodName: fmt.Sprintf("%s-%d", node, s), SyncBuildEndpoint: true,
				})
				results[i][s] = result{ep, err}
			})
		}
	}
	wg.Wait()

	for s := range sets {
		var ids []uint32
		for i, node := range nodes {
			r := results[i][s]
			if r.err != nil {
				t.Fatalf("%s: endpoint of set s%d: %v", node, s, r.err)
			}
			if r.ep.State != models.StateReady || r.ep.Identity == nil {
				t.Fatalf("%s: endpoint of set s%d is %s after a sync build", node, s, r.ep.State)
			}
			ids = append(ids, r.ep.Identity.ID)
		}
		if ids[0] != ids[1] {
			t.Errorf("label set s%d: node-1 has identity %d, node-2 %d", s, ids[0], ids[1])
		}
	}

	// Exactly one CiliumIdentity per label set, and each agent's table
	// maps the set to it.
	e2eutil.Eventually(t, 30*time.Second, "one CiliumIdentity per label set", func() error {
		out, _, err := cluster.KubectlErr("get", "ciliumidentities", "-l", "set", "-o",
			`jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.set}{"\n"}{end}`)
		if err != nil {
			return err
		}
		bySet := map[string][]string{}
		for _, line := range strings.Fields(out) {
			name, set, _ := strings.Cut(line, "=")
			bySet[set] = append(bySet[set], name)
		}
		if len(bySet) != sets {
			return fmt.Errorf("%d label sets have identities, want %d:\n%s", len(bySet), sets, out)
		}
		for set, names := range bySet {
			if len(names) != 1 {
				return fmt.Errorf("label set %s has %d CiliumIdentities: %v", set, len(names), names)
			}
			s, _ := strconv.Atoi(strings.TrimPrefix(set, "s"))
			if want := strconv.FormatUint(uint64(results[0][s].ep.Identity.ID), 10); names[0] != want {
				return fmt.Errorf("label set %s: CiliumIdentity %s, the agents use %s", set, names[0], want)
			}
		}
		return nil
	})
}
