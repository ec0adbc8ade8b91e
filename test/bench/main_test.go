package bench

import (
	"flag"
	"os"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// bins are the binaries under test, built once by TestMain; membrane-cni
// is in bins.PluginDir, the CNI_PATH of the membrane network.
var bins *e2eutil.Binaries

func TestMain(m *testing.M) {
	flag.Parse()
	// Build only when a benchmark will run.
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	os.Exit(e2eutil.RunSuite(m, "membrane-bench-bin", func(dir string) {
		bins = e2eutil.Build(dir, "", e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CLIBin, e2eutil.CnitoolBin)
	}))
}
