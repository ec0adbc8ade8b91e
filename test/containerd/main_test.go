package containerd

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bins are what the suite runs, built once by TestMain into one directory:
// membrane-agent with membrane-cni next to it (where `membrane-agent
// install-cni` finds it), and the sandbox image's pause binary.
var bins struct {
	dir    string
	agent  string
	plugin string
	pause  string
	// err says why they are missing; tests fail with it.
	err error
}

func TestMain(m *testing.M) {
	if tool := os.Getenv(toolEnv); tool != "" {
		// Re-executed inside a sandbox's netns as a traffic tool.
		os.Exit(runTool(tool, os.Args[1:]))
	}
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		// Every test skips (or fails under MEMBRANE_REQUIRE_PRIVILEGED=1)
		// on its own: nothing to build.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "membrane-ctrd-bin")
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
	// This module lives in test/containerd of the main module.
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	build := func(name, pkg, wd string, env ...string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = wd
		cmd.Env = append(os.Environ(), env...)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
		}
		return out, nil
	}
	if bins.agent, err = build("membrane-agent", "./cmd/membrane-agent", root); err != nil {
		return err
	}
	if bins.plugin, err = build("membrane-cni", "./plugins/membrane-cni", root); err != nil {
		return err
	}
	wd, _ := os.Getwd()
	if bins.pause, err = build("pause", "./pause", wd, "CGO_ENABLED=0"); err != nil {
		return err
	}
	return nil
}

// lastLines is the end of a long output, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
