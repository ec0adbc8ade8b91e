package e2eutil

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// What Build can make, by name: the names of the binaries, and of the
// real cnitool that `go tool -n cnitool` builds (cached) through the tool
// line in the main module's go.mod.
const (
	AgentBin   = "membrane-agent"
	PluginBin  = "membrane-cni"
	CLIBin     = "membrane"
	CnitoolBin = "cnitool"
)

// Binaries are the programs under test, built once by a suite's TestMain.
// A path is empty when that program was not asked for or did not build.
type Binaries struct {
	Dir string // where the binaries are
	// PluginDir is where membrane-cni is (a CNI_PATH); Dir unless Build
	// was told otherwise.
	PluginDir string
	Agent     string
	Plugin    string
	CLI       string
	Cnitool   string

	// err says why nothing could be built; errs why one program did not.
	err  error
	errs map[string]error
}

// RunSuite is a suite's TestMain after its tool dispatch: when the tests
// can run (root, not -short) it calls build with a new temporary
// directory named after pattern, runs the tests, removes the directory
// and returns the exit code. Otherwise every test skips (or, with
// MEMBRANE_REQUIRE_PRIVILEGED=1, fails) on its own: nothing is built.
func RunSuite(m *testing.M, pattern string, build func(dir string)) int {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build(dir)
	return m.Run()
}

// Build builds the programs names lists (AgentBin, PluginBin, CLIBin,
// CnitoolBin) from the main module into dir, membrane-cni into pluginDir
// ("" is dir). A failure is kept for Need to report.
func Build(dir, pluginDir string, names ...string) *Binaries {
	if pluginDir == "" {
		pluginDir = dir
	}
	b := &Binaries{Dir: dir, PluginDir: pluginDir, errs: map[string]error{}}
	root, err := ModuleRoot()
	if err != nil {
		b.err = err
		return b
	}
	targets := map[string]struct {
		pkg, dir string
		path     *string
	}{
		AgentBin:  {"./cmd/membrane-agent", dir, &b.Agent},
		PluginBin: {"./plugins/membrane-cni", pluginDir, &b.Plugin},
		CLIBin:    {"./cmd/membrane", dir, &b.CLI},
	}
	for _, name := range names {
		if name == CnitoolBin {
			cmd := exec.Command("go", "tool", "-n", "cnitool")
			cmd.Dir = root
			out, err := cmd.Output()
			if err != nil {
				b.errs[name] = fmt.Errorf("go tool -n cnitool: %w", err)
				continue
			}
			b.Cnitool = strings.TrimSpace(string(out))
			continue
		}
		t, ok := targets[name]
		if !ok {
			b.errs[name] = fmt.Errorf("e2eutil.Build cannot make %q", name)
			continue
		}
		out := filepath.Join(t.dir, name)
		if err := GoBuild(out, t.pkg, root); err != nil {
			b.errs[name] = err
			continue
		}
		*t.path = out
	}
	return b
}

// Need fails the test if a program it needs was not built, saying why.
func (b *Binaries) Need(tb testing.TB, names ...string) {
	tb.Helper()
	if b == nil {
		tb.Fatal("the binaries were not built (TestMain builds them)")
	}
	if b.err != nil {
		tb.Fatal(b.err)
	}
	for _, n := range names {
		if err := b.errs[n]; err != nil {
			tb.Fatalf("%s is needed but did not build: %v", n, err)
		}
		if b.path(n) == "" {
			tb.Fatalf("%s is needed but TestMain did not build it", n)
		}
	}
}

func (b *Binaries) path(name string) string {
	switch name {
	case AgentBin:
		return b.Agent
	case PluginBin:
		return b.Plugin
	case CLIBin:
		return b.CLI
	case CnitoolBin:
		return b.Cnitool
	}
	return ""
}

// GoBuild runs `go build -o out pkg` in dir with env added to the
// environment.
func GoBuild(out, pkg, dir string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	return nil
}

// ModuleRoot is the main module's directory, also from a module that
// replaces it with a local path (test/containerd).
func ModuleRoot() (string, error) {
	const mod = "github.com/membrane-net/membrane"
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w (run the suite inside the module)", mod, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: no directory (run the suite inside the module)", mod)
	}
	return dir, nil
}
