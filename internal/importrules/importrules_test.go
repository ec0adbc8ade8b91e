package importrules

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/membrane-net/membrane/"

// infrastructure are the packages under cells/ that every cell may use:
// they serve all cells rather than do a job of the endpoint story.
var infrastructure = []string{
	"cells/apiserver",      // the route type a cell provides; JSON errors
	"cells/health",         // per-cell health scopes
	"cells/infrastructure", // the group every hive starts from
	"cells/statedir",       // where a cell persists its files
}

// seams are the allowed cell -> cell imports, each with its reason.
var seams = map[[2]string]string{
	// An API request needs an answer now (the new endpoint ID, a 409): the
	// endpoint API calls the endpoint manager, through a small interface.
	{"cells/endpointapi", "cells/endpointmanager"}: "request path",
	// A CNI DEL queued while the agent was down is done at start exactly
	// like an API DEL: the endpoint manager's delete path, then the IPAM's
	// release of the attachment's addresses.
	{"cells/cnidelqueue", "cells/endpointmanager"}: "queued CNI DEL, endpoint",
	{"cells/cnidelqueue", "cells/ipam"}:            "queued CNI DEL, addresses",
	// The cluster's policies go through the repository, which owns the
	// rules, their revision and their persistence: the Kubernetes policy
	// watcher hands it each object's rules (SetObjects, source k8s).
	{"cells/k8s", "cells/policyrepo"}: "policy rules of the cluster",
	// This node's CiliumNode announces the pod CIDRs the IPAM hands
	// addresses from: its flags (ipam.Config), read, never a second flag;
	// with --ipam=kubernetes the nodes cell reads them from the Node
	// object and provides them to the IPAM as ipam.PodCIDRSource (the
	// IPAM imports nothing of cells/k8s).
	{"cells/k8s", "cells/ipam"}: "this node's pod CIDRs in its CiliumNode",
	// In Kubernetes mode the identity cell's caches (CiliumIdentities,
	// claims, CiliumEndpoints) report their sync and watch errors in the
	// k8s-status table, like the watchers of cells/k8s.
	{"cells/identity", "cells/k8s"}: "k8s-status rows (cells/k8s/client Status)",
}

type pkg struct {
	ImportPath  string
	Imports     []string
	TestImports []string
	Deps        []string
}

// list runs go list over patterns (with the transitive deps).
func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", append([]string{"list", "-deps=false", "-json"}, patterns...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// ours returns the module's packages among paths, relative to the module.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if rel, ok := strings.CutPrefix(p, module); ok {
			out = append(out, rel)
		}
	}
	return out
}

// cellOf returns the cell a package under cells/ belongs to ("cells/X"),
// or "" for the assembler (cells) and packages outside cells/.
func cellOf(p string) string {
	parts := strings.Split(p, "/")
	if len(parts) < 2 || parts[0] != "cells" {
		return ""
	}
	return "cells/" + parts[1]
}

// A cell may import the schema, the API contract, the datapath, labels,
// the policy language and infrastructure, never another cell: cells talk
// through tables.
func TestCellsDoNotImportCells(t *testing.T) {
	for _, p := range list(t, "./cells/...") {
		from := cellOf(p.ImportPath)
		if from == "" || slices.Contains(infrastructure, from) {
			continue
		}
		for _, imp := range ours(append(p.Imports, p.TestImports...)) {
			to := cellOf(imp)
			if to == "" || to == from || slices.Contains(infrastructure, to) {
				continue
			}
			if _, ok := seams[[2]string{from, to}]; ok {
				continue
			}
			t.Errorf("%s imports %s: a cell reads and writes tables, it does not import another cell", p.ImportPath, imp)
		}
	}
}

// The clients (the CLI, the CNI plugin) speak the API contract in api/,
// never an agent cell, directly or through another package.
func TestClientsDoNotImportCells(t *testing.T) {
	for _, p := range listDeps(t, "./cmd/membrane", "./plugins/...") {
		for _, dep := range ours(p.Deps) {
			if strings.HasPrefix(dep, "cells/") || strings.HasPrefix(dep, "statedb/") {
				t.Errorf("%s depends on %s: clients use api/ only", p.ImportPath, dep)
			}
		}
	}
}

// The schema is the bottom layer: it does not know the API or any cell.
// The API contract does not know the schema or any cell (the agent converts
// at its edge), so the CNI plugin that links it stays small.
func TestSchemaAndAPIPointOneWay(t *testing.T) {
	for _, p := range listDeps(t, "./statedb/...", "./api/...", "./policy/...", "./labels/...", "./datapath/...") {
		for _, dep := range ours(p.Deps) {
			bad := strings.HasPrefix(dep, "cells/")
			if strings.HasPrefix(p.ImportPath, "api/") || strings.HasPrefix(p.ImportPath, "datapath/") {
				bad = bad || strings.HasPrefix(dep, "statedb/")
			}
			if strings.HasPrefix(p.ImportPath, "statedb/") {
				bad = bad || strings.HasPrefix(dep, "api/")
			}
			if bad {
				t.Errorf("%s depends on %s", p.ImportPath, dep)
			}
		}
	}
}

// membrane-cni is executed for every pod: it links no hive, statedb, BPF,
// Kubernetes or Prometheus library.
func TestPluginStaysLean(t *testing.T) {
	heavy := []string{"github.com/cilium/hive", "github.com/cilium/statedb", "github.com/cilium/ebpf", "k8s.io/", "sigs.k8s.io/", "github.com/prometheus/"}
	for p, deps := range dependsOn(t, []string{"./plugins/membrane-cni"}, heavy...) {
		t.Errorf("%s depends on %s", p, strings.Join(deps, ", "))
	}
}

// The Kubernetes objects (k8s/apis) and their CRDs (install/kubernetes)
// are libraries for the agent's Kubernetes cells, like the policy
// language: they may use the domain libraries, never a cell or the
// schema.
func TestKubernetesTypesAreLibraries(t *testing.T) {
	for p, deps := range dependsOn(t, []string{"./k8s/...", "./install/..."}, "cells/", "statedb/") {
		t.Errorf("%s depends on %s: Kubernetes types are a library, not a cell", p, strings.Join(deps, ", "))
	}
}

// The CLI, like membrane-cni, talks to the agent only: it links none of
// the Kubernetes libraries (client-go, apimachinery, ...), which the
// agent's Kubernetes mode and the packages under k8s/ bring in, nor the
// Prometheus client the agent's metrics (metrics/, cells/metrics) use.
func TestCLIDoesNotLinkKubernetes(t *testing.T) {
	for p, deps := range dependsOn(t, []string{"./cmd/membrane"}, "k8s.io/", "github.com/prometheus/", "metrics") {
		t.Errorf("%s depends on %s", p, strings.Join(deps, ", "))
	}
}

// The CLI links neither the hive nor statedb: `membrane shell` speaks the
// agent's shell protocol itself (cmd/membrane/shell.go) instead of
// importing hive's shell client, and `membrane statedb` reads JSON.
func TestCLIDoesNotLinkHive(t *testing.T) {
	for p, deps := range dependsOn(t, []string{"./cmd/membrane"}, "github.com/cilium/hive", "github.com/cilium/statedb") {
		t.Errorf("%s depends on %s", p, strings.Join(deps, ", "))
	}
}

// dependsOn returns, for each package of patterns that has any, its
// dependencies (direct or not) whose import path starts with one of
// prefixes; the module's own packages are named relative to it ("cells/").
func dependsOn(t *testing.T, patterns []string, prefixes ...string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, p := range listDeps(t, patterns...) {
		for _, dep := range p.Deps {
			dep = strings.TrimPrefix(dep, module)
			if slices.ContainsFunc(prefixes, func(pre string) bool { return strings.HasPrefix(dep, pre) }) {
				out[p.ImportPath] = append(out[p.ImportPath], dep)
			}
		}
	}
	return out
}

// listDeps is list with every package's transitive dependencies.
func listDeps(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	pkgs := list(t, patterns...)
	for i := range pkgs {
		if len(pkgs[i].Deps) == 0 {
			t.Fatalf("go list gave no dependencies for %s", pkgs[i].ImportPath)
		}
	}
	return pkgs
}
