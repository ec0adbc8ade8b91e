package cells_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/hivetest"

	"github.com/membrane-net/membrane/cells/endpointapi"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/podmeta"
	"github.com/membrane-net/membrane/cells/policy"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/internal/celltest"
)

// stateFiles are the files the control plane reads back at start, in the
// order a fuzzed byte picks them.
var stateFiles = []string{"endpoints.json", "ipam.json", "identities.json", "pods.json", "policy.json", "cidr-identities.json"}

// A state file holding anything (torn, edited by hand, written by another
// version) makes the control plane start, or fail to start with an error
// naming that file; it never panics, and a start that succeeded stops
// cleanly. The cells are the agent's control plane (no datapath).
func FuzzStateFiles(f *testing.F) {
	for i, seed := range []string{
		`[{"id":12,"containerID":"c1","ifName":"eth0","hostIfName":"lxc1","labels":["k8s:app=web"],"ips":["10.251.0.5"]}]`,
		`{"version":1,"allocations":[{"ip":"10.251.0.5","owner":"c1:eth0"},{"ip":"10.251.0.5","owner":"c2:eth0"},{"ip":"192.0.2.1"}]}`,
		`{"version":1,"next":300,"identities":[{"id":256,"labels":["k8s:app=web"]},{"id":256,"labels":["k8s:app=db"]},{"id":7,"labels":[]}]}`,
		`[{"namespace":"default","name":"web","labels":{"app":"web"}},null]`,
		`{"revision":3,"rules":[{"key":"r1"},null]}`,
		`{"version":1,"identities":{"10.0.0.0/8":16777300}}`,
		`{"version":99}`,
		`[`,
		`null`,
	} {
		f.Add(uint8(i%len(stateFiles)), []byte(seed))
		f.Add(uint8(i+1), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		dir := t.TempDir()
		name := stateFiles[int(which)%len(stateFiles)]
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		h := celltest.New(t, dir,
			ipam.Cell, podmeta.Cell, endpointmanager.Cell, endpointapi.Cell,
			identity.Cell, policyrepo.Cell, policy.Cell,
		)
		hive.AddConfigOverride(h.Hive, func(c *ipam.Config) { c.PodCIDR = "10.251.0.0/24" })
		log := hivetest.Logger(t, hivetest.LogLevel(100))
		if err := h.Hive.Start(log, context.Background()); err != nil {
			if !strings.Contains(err.Error(), name) && !strings.Contains(err.Error(), strings.TrimSuffix(name, ".json")) {
				t.Fatalf("start with this %s failed without naming it: %v", name, err)
			}
			h.Hive.Stop(log, context.Background())
			return
		}
		if err := h.Hive.Stop(log, context.Background()); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
}
