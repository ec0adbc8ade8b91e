package containerd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// bins are what the suite runs, built once by TestMain into one directory:
// membrane-agent with membrane-cni next to it (where `membrane-agent
// install-cni` finds it), and the sandbox image's pause binary.
var bins struct {
	*e2eutil.Binaries
	pause string
	// pauseErr says why the pause binary is missing; tests fail with it.
	pauseErr error
}

func TestMain(m *testing.M) {
	if tool := os.Getenv(e2eutil.ToolEnv); tool != "" {
		// Re-executed inside a sandbox's netns as a traffic tool, or by
		// containerd as the CNI plugin wrapper.
		if tool == "cni-record" {
			os.Exit(recordAndExec())
		}
		os.Exit(e2eutil.RunTool(tool, os.Args[1:]))
	}
	os.Exit(e2eutil.RunSuite(m, "membrane-ctrd-bin", func(dir string) {
		bins.Binaries = e2eutil.Build(dir, "", e2eutil.AgentBin, e2eutil.PluginBin)
		// The pause binary is this module's own.
		wd, _ := os.Getwd()
		bins.pause = filepath.Join(dir, "pause")
		bins.pauseErr = e2eutil.GoBuild(bins.pause, "./pause", wd, "CGO_ENABLED=0")
	}))
}
