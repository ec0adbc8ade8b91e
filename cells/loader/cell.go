// Package loader owns the datapath's kernel objects: it mounts bpffs if
// needed, creates (or reopens) the pinned maps under --bpf-root, loads the
// two datapath programs once, attaches them to each endpoint's host veth
// (tc clsact filters by default, or tcx links pinned under
// --bpf-root/links with --datapath-mode=tcx) and runs the statedb
// reconcilers that write the ipcache, bpf-endpoints and endpoint-policy
// tables into the maps.
//
// Maps and links are pinned and filters live with their interface, so a
// restart changes nothing the kernel enforces: a restarted agent reopens
// the maps, swaps its freshly loaded programs into the existing filters or
// links, and its reconcilers prune only entries no row explains, after the
// tables are initialized.
//
// In the endpoint story it is step 8, the kernel end of regeneration
// (docs/endpoint-lifecycle.md#8-the-kernel-and-ready): an endpoint is
// ready only once its rows here have status Done.
//
// Try it: membrane statedb ipcache; membrane bpf ipcache list.
package loader

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/bpf"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/dirlock"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Config of the loader.
type Config struct {
	BPFRoot      string
	DatapathMode string
	HostRouting  string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("bpf-root", def.BPFRoot, "bpffs directory where the datapath's maps, programs and links are pinned; bpffs is mounted at /sys/fs/bpf if missing")
	fs.String("host-routing", def.HostRouting, "How packets between two pods of this node are forwarded: bpf (the datapath hands them from one pod's veth straight into the other pod's netns with bpf_redirect_peer, past the host's IP stack and its firewall; same policy, conntrack, counters and events), legacy (by the host's IP stack: netfilter and tcpdump on the receiving veth see them) or auto (bpf when the kernel has bpf_redirect_peer, Linux 5.10+, else legacy)")
	fs.String("datapath-mode", def.DatapathMode, "How programs attach to endpoint veths: tc (clsact filters; fastest to attach, so pods start sooner), tcx (links, Linux 6.6+; each attachment waits for an RCU grace period under RTNL) or auto (tcx when the kernel has it, else tc)")
}

// DefaultConfig uses the standard bpffs location and tc attachment: on the
// kernels measured (docs/datapath.md) a tcx link costs a pod ~25 ms and
// serialises bursts, a tc filter ~0.3 ms, with the same enforcement.
//
// Host routing is bpf wherever the kernel can: pod to pod it costs a
// quarter less round trip than the host stack (docs/benchmarks.md), with
// the same verdicts. Operators who need the host's firewall or tcpdump on
// the receiving veth to see pod-to-pod packets choose legacy
// (docs/datapath.md#host-routing).
var DefaultConfig = Config{BPFRoot: "/sys/fs/bpf/membrane", DatapathMode: ModeTC, HostRouting: HostRoutingAuto}

// Host routing modes (--host-routing), Cilium's words.
const (
	HostRoutingLegacy = "legacy"
	HostRoutingBPF    = "bpf"
	HostRoutingAuto   = "auto"
)

// Cell provides *Datapath, the maps.EventMaps the monitor reads, and the
// map reconcilers.
var Cell = cell.Module(
	"loader",
	"BPF maps and programs and their reconcilers",

	cell.Config(DefaultConfig),
	cell.Provide(newDatapath, func(dp *Datapath) maps.EventMaps { return dp }),
	cell.Module("ipcache-reconciler", "Writes the ipcache table into its map", cell.Invoke(registerIPCacheReconciler)),
	cell.Module("endpoints-reconciler", "Writes the bpf-endpoints table into its map and attaches programs", cell.Invoke(registerEndpointsReconciler)),
	cell.Module("policy-reconciler", "Writes the endpoint-policy table into the policy map", cell.Invoke(registerPolicyReconciler)),
)

func newDatapath(lc cell.Lifecycle, log *slog.Logger, health cell.Health, cfg Config) (*Datapath, error) {
	switch cfg.DatapathMode {
	case ModeAuto, ModeTCX, ModeTC:
	default:
		return nil, fmt.Errorf("--datapath-mode=%q: want auto, tcx or tc", cfg.DatapathMode)
	}
	switch cfg.HostRouting {
	case HostRoutingLegacy, HostRoutingBPF, HostRoutingAuto:
	default:
		return nil, fmt.Errorf("--host-routing=%q: want auto, bpf or legacy", cfg.HostRouting)
	}
	dp := &Datapath{}
	var rootLock *dirlock.Lock
	lc.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			if err := ensureBPFFS(cfg.BPFRoot); err != nil {
				return err
			}
			// Two agents on one root would fight over the same pinned maps.
			var err error
			if rootLock, err = dirlock.Acquire(cfg.BPFRoot, "--bpf-root"); err != nil {
				return err
			}
			spec, err := bpf.Spec()
			if err != nil {
				return err
			}
			if dp.Maps, err = openMaps(log, cfg.BPFRoot, spec); err != nil {
				return err
			}
			hostRouting, err := resolveHostRouting(cfg.HostRouting)
			if err != nil {
				return err
			}
			if err := bpf.SetHostRouting(spec, hostRouting == HostRoutingBPF); err != nil {
				return err
			}
			if dp.Programs, err = loadPrograms(cfg.BPFRoot, spec, dp.Maps); err != nil {
				return err
			}
			mode := cfg.DatapathMode
			if mode == ModeAuto {
				mode = ModeTC
				if probeTCX() {
					mode = ModeTCX
				}
			}
			if mode == ModeTCX {
				dp.Attacher = &tcxAttacher{dir: filepath.Join(cfg.BPFRoot, "links"), progs: dp.Programs}
			} else {
				dp.Attacher = &tcAttacher{progs: dp.Programs, known: map[int]bool{}}
			}
			log.Info("datapath loaded", "bpf-root", cfg.BPFRoot, "mode", mode, "host-routing", hostRouting)
			// What auto chose, where operators look: membrane status.
			health.OK(fmt.Sprintf("datapath loaded: attach %s, host routing %s", mode, hostRouting))
			return nil
		},
		OnStop: func(cell.HookContext) error {
			// Links and maps stay pinned: the datapath keeps enforcing
			// while the agent is away.
			if dp.Programs != nil {
				dp.Programs.close()
			}
			if dp.Maps != nil {
				dp.Maps.close()
			}
			return rootLock.Unlock()
		},
	})
	return dp, nil
}

// pruneInterval: pruning also repairs entries changed behind our back.
const pruneInterval = 5 * time.Minute

func retry() reconciler.Option { return reconciler.WithRetry(20*time.Millisecond, 10*time.Second) }

// named names a reconciler after its table: the loader has three, and
// their metrics (membrane_reconciler_*) and jobs tell them apart by it.
func named(tbl statedb.TableMeta) reconciler.Option { return reconciler.WithName(tbl.Name()) }

func registerIPCacheReconciler(p reconciler.Params, dp *Datapath, tbl statedb.RWTable[*tables.IPCacheEntry]) error {
	_, err := reconciler.Register(p, tbl,
		(*tables.IPCacheEntry).Clone, (*tables.IPCacheEntry).SetStatus, (*tables.IPCacheEntry).GetStatus,
		ipcacheOps{dp}, nil, reconciler.WithPruning(pruneInterval), retry(), named(tbl))
	return err
}

func registerEndpointsReconciler(p reconciler.Params, dp *Datapath, tbl statedb.RWTable[*tables.EndpointMapEntry]) error {
	_, err := reconciler.Register(p, tbl,
		(*tables.EndpointMapEntry).Clone, (*tables.EndpointMapEntry).SetStatus, (*tables.EndpointMapEntry).GetStatus,
		endpointOps{dp}, nil, reconciler.WithPruning(pruneInterval), retry(), named(tbl))
	return err
}

func registerPolicyReconciler(p reconciler.Params, dp *Datapath, tbl statedb.RWTable[*tables.EndpointPolicy]) error {
	_, err := reconciler.Register(p, tbl,
		(*tables.EndpointPolicy).Clone, (*tables.EndpointPolicy).SetStatus, (*tables.EndpointPolicy).GetStatus,
		newPolicyOps(dp), nil, reconciler.WithPruning(pruneInterval), retry(), named(tbl))
	return err
}
