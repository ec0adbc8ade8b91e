package e2e

import (
	"os"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// bins are the binaries under test, built once by TestMain; membrane-cni
// is in bins.PluginDir, the CNI_PATH.
var bins *e2eutil.Binaries

func TestMain(m *testing.M) {
	if tool := os.Getenv(e2eutil.ToolEnv); tool != "" {
		// Re-executed inside a pod's netns as a traffic tool.
		os.Exit(e2eutil.RunTool(tool, os.Args[1:]))
	}
	os.Exit(e2eutil.RunSuite(m, "membrane-e2e-bin", func(dir string) {
		bins = e2eutil.Build(dir, "", e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CLIBin, e2eutil.CnitoolBin)
	}))
}
