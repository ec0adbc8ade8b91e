package bench

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
	dir     string // CNI_PATH of the membrane network: membrane-cni lives here
	agent   string
	cnitool string
	// err says why the binaries are missing; benchmarks needing them fail with it.
	err error
}

func TestMain(m *testing.M) {
	flag.Parse()
	// Build only when a benchmark will run and can run (root).
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" || testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "membrane-bench-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.err = buildAll(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildAll(dir string) error {
	bins.dir = dir
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := string(bytes.TrimSpace(out))
	if gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("not inside the module")
	}
	root := filepath.Dir(gomod)
	build := func(name, pkg string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
		}
		return out, nil
	}
	if bins.agent, err = build("membrane-agent", "./cmd/membrane-agent"); err != nil {
		return err
	}
	if _, err = build("membrane-cni", "./plugins/membrane-cni"); err != nil {
		return err
	}
	// The real cnitool through go.mod's tool line (built, cached, located).
	cmd := exec.Command("go", "tool", "-n", "cnitool")
	cmd.Dir = root
	out, err = cmd.Output()
	if err != nil {
		return fmt.Errorf("go tool -n cnitool: %w", err)
	}
	bins.cnitool = strings.TrimSpace(string(out))
	return nil
}
