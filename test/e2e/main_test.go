package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bins are the binaries under test, built once by TestMain.
var bins struct {
	dir     string // CNI_PATH: membrane-cni lives here
	agent   string
	plugin  string
	cli     string
	cnitool string
	// errs holds why a binary is missing; tests needing it fail with it.
	errs map[string]error
}

func TestMain(m *testing.M) {
	if tool := os.Getenv(toolEnv); tool != "" {
		// Re-executed inside a pod's netns as a traffic tool.
		os.Exit(runTool(tool, os.Args[1:]))
	}
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		// Every test skips (or, with MEMBRANE_REQUIRE_PRIVILEGED=1,
		// fails) on its own: no need to build anything.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "membrane-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildAll(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildAll(dir string) {
	bins.dir = dir
	bins.errs = map[string]error{}
	root, err := moduleRoot()
	if err != nil {
		bins.errs["all"] = err
		return
	}
	build := func(name, pkg string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			bins.errs[name] = fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
			return ""
		}
		return out
	}
	bins.agent = build("membrane-agent", "./cmd/membrane-agent")
	bins.plugin = build("membrane-cni", "./plugins/membrane-cni")
	bins.cli = build("membrane", "./cmd/membrane")
	// The real cnitool, through the tool line in go.mod: `go tool -n`
	// builds it (cached) and prints where it is.
	cmd := exec.Command("go", "tool", "-n", "cnitool")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		bins.errs["cnitool"] = fmt.Errorf("go tool -n cnitool: %w", err)
		return
	}
	bins.cnitool = strings.TrimSpace(string(out))
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := string(bytes.TrimSpace(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// needBinaries fails the test if a binary it needs did not build.
func needBinaries(t *testing.T, names ...string) {
	t.Helper()
	if err := bins.errs["all"]; err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := bins.errs[n]; err != nil {
			t.Fatalf("%s is needed but did not build: %v", n, err)
		}
	}
}
