package identity_test

import (
	"context"
	"maps"
	"testing"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/script"
	"github.com/cilium/hive/script/scripttest"
	"github.com/spf13/pflag"
)

// TestScript replays testdata/*.txtar: endpoints rows go in, identities and
// endpoint states come out. Each script gets its own agent and state dir;
// a "#! --flag=value" first line sets the agent's flags.
func TestScript(t *testing.T) {
	scripttest.Test(t, context.Background(),
		func(t testing.TB, args []string) *script.Engine {
			a := newTestAgent(t, t.TempDir())
			fs := pflag.NewFlagSet("", pflag.ContinueOnError)
			a.h.RegisterFlags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			log := hivetest.Logger(t)
			cmds, err := a.h.ScriptCommands(log)
			if err != nil {
				t.Fatal(err)
			}
			maps.Insert(cmds, maps.All(script.DefaultCmds()))
			t.Cleanup(func() { a.h.Stop(log, context.Background()) })
			return &script.Engine{Cmds: cmds}
		}, []string{}, "testdata/*.txtar")
}
