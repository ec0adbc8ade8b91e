// Package loader owns the datapath's kernel objects: it mounts bpffs if
// needed, creates (or reopens) the pinned maps under --bpf-root and runs the
// statedb reconcilers that write the ipcache and bpf-endpoints tables into
// them. Pinned maps outlive the agent, so a restart changes nothing the
// kernel enforces; on start the reconcilers prune only entries no row
// explains, after the tables are initialized.
//
// In the endpoint story it is the kernel end of regeneration (step 6): an
// endpoint is ready only once its rows here have status Done.
//
// Try it: membrane statedb ipcache; membrane bpf ipcache list.
package loader

import (
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/spf13/pflag"

	tables "github.com/membrane-net/membrane/statedb"
)

// Config of the loader.
type Config struct {
	BPFRoot string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("bpf-root", def.BPFRoot, "bpffs directory where the datapath's maps (and programs) are pinned; bpffs is mounted at /sys/fs/bpf if missing")
}

// Cell provides *Maps and the map reconcilers.
var Cell = cell.Module(
	"loader",
	"BPF maps and their reconcilers",

	cell.Config(Config{BPFRoot: "/sys/fs/bpf/membrane"}),
	cell.Provide(newMaps),
	cell.Module("ipcache-reconciler", "Writes the ipcache table into its map", cell.Invoke(registerIPCacheReconciler)),
	cell.Module("endpoints-reconciler", "Writes the bpf-endpoints table into its map", cell.Invoke(registerEndpointsReconciler)),
)

func newMaps(lc cell.Lifecycle, log *slog.Logger, cfg Config) *Maps {
	m := &Maps{}
	lc.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			if err := ensureBPFFS(cfg.BPFRoot); err != nil {
				return err
			}
			return m.open(log, cfg.BPFRoot)
		},
		OnStop: func(cell.HookContext) error { m.close(); return nil },
	})
	return m
}

// pruneInterval: pruning also repairs entries changed behind our back.
const pruneInterval = 5 * time.Minute

func registerIPCacheReconciler(p reconciler.Params, m *Maps, ipc statedb.RWTable[*tables.IPCacheEntry]) error {
	_, err := reconciler.Register(p, ipc,
		(*tables.IPCacheEntry).Clone, (*tables.IPCacheEntry).SetStatus, (*tables.IPCacheEntry).GetStatus,
		ipcacheOps{m}, nil,
		reconciler.WithPruning(pruneInterval), reconciler.WithRetry(20*time.Millisecond, 10*time.Second))
	return err
}

func registerEndpointsReconciler(p reconciler.Params, m *Maps, eps statedb.RWTable[*tables.EndpointMapEntry]) error {
	_, err := reconciler.Register(p, eps,
		(*tables.EndpointMapEntry).Clone, (*tables.EndpointMapEntry).SetStatus, (*tables.EndpointMapEntry).GetStatus,
		endpointOps{m}, nil,
		reconciler.WithPruning(pruneInterval), reconciler.WithRetry(20*time.Millisecond, 10*time.Second))
	return err
}
