package endpoints

import (
	"context"
	"maps"
	"testing"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/job"
	"github.com/cilium/hive/script"
	"github.com/cilium/hive/script/scripttest"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// TestScript replays testdata/*.txtar: endpoints, pods and identities rows
// go in (as the cells that own them write them), the desired CEPs of the
// cilium-endpoints table come out. No API server: the rows stay Pending,
// as for a reconciler that has not written them yet.
func TestScript(t *testing.T) {
	scripttest.Test(t, context.Background(),
		func(t testing.TB, args []string) *script.Engine {
			h := celltest.New(t, "", cell.Module("cep-derivation", "CEP derivation without an API server",
				cell.Invoke(registerDerivation)))
			log := hivetest.Logger(t)
			cmds, err := h.ScriptCommands(log)
			if err != nil {
				t.Fatal(err)
			}
			maps.Insert(cmds, maps.All(script.DefaultCmds()))
			t.Cleanup(func() { h.Stop(log, context.Background()) })
			return &script.Engine{Cmds: cmds}
		}, []string{}, "testdata/*.txtar")
}

// registerDerivation runs the controller alone.
func registerDerivation(db *statedb.DB, jobs job.Group, ceps statedb.RWTable[*tables.CiliumEndpoint],
	endpoints statedb.Table[*tables.Endpoint], pods statedb.Table[*tables.Pod],
	identities statedb.Table[*tables.Identity], k8sStatus statedb.Table[*tables.K8sStatus]) {
	wtxn := db.WriteTxn(ceps)
	initDone := ceps.RegisterInitializer(wtxn, "k8s-endpoints")
	wtxn.Commit()
	c := &controller{
		db: db, ceps: ceps, k8sStatus: k8sStatus, initDone: initDone, prune: func() {},
		src: sources{endpoints: endpoints, pods: pods, identities: identities},
	}
	jobs.Add(job.OneShot("derive-cilium-endpoints", c.run))
}
