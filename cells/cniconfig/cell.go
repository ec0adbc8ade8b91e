// Package cniconfig installs Membrane as the node's CNI network: once the
// agent is ready to serve, it writes the conflist that makes the container
// runtime call membrane-cni (--write-cni-conf-when-ready, the flag and
// semantics of Cilium's agent), and it holds what `membrane-agent
// install-cni` uses to put the plugin binary into the CNI bin dir.
//
// Why "when ready": containerd's CRI plugin and podman take the first
// conflist in /etc/cni/net.d as the node's network, and kubelet reports
// the node Ready as soon as the runtime has one. A conflist that exists
// before its agent listens sends pods to a plugin that can only fail, so
// the file appears only after the API socket is open, every cell having
// restored its state and loaded the datapath (its start hook runs after
// the API server's; see cells.DefaultCells).
//
// Why it stays on shutdown (unless --remove-cni-conf-on-shutdown): an
// agent restart (upgrade, crash, systemd's Restart=on-failure) lasts a
// few seconds, during which ADDs fail and the runtime retries them.
// Removing the conflist would instead tell kubelet the node has no
// network (NetworkReady=false, the node goes NotReady) and the runtime
// could not even tear pods down (DEL needs the conflist). Remove it when
// the agent leaves the node for good: `make uninstall` does.
//
// Reads: the API server's --socket and the --state-dir. Writes: the conflist file.
// Try it: membrane-agent --write-cni-conf-when-ready /tmp/net.d/05-membrane.conflist
// and cat the file once `membrane status` answers.
package cniconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/internal/atomicfile"
)

// DefaultPath is where a production install writes the conflist: "05"
// sorts it before the usual "10-"/"87-" files of other networks, since
// runtimes take the first file in the directory.
const DefaultPath = "/etc/cni/net.d/05-membrane.conflist"

// DefaultMTU is the pods' MTU when --cni-mtu is not given.
const DefaultMTU = 1500

// Config of the cell.
type Config struct {
	// WriteCNIConfWhenReady is the conflist path; empty: write nothing.
	WriteCNIConfWhenReady string
	// CNIMTU is the "mtu" of membrane-cni in the conflist.
	CNIMTU int
	// CNIConfLoopback adds the loopback plugin to the conflist.
	CNIConfLoopback bool
	// RemoveCNIConfOnShutdown removes the conflist when the agent stops.
	RemoveCNIConfOnShutdown bool
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("write-cni-conf-when-ready", def.WriteCNIConfWhenReady,
		"Write the CNI conflist to this path (atomically) once the agent serves its API, so the runtime never calls membrane-cni before the agent is up; production: "+DefaultPath+". Empty: write nothing")
	fs.Int("cni-mtu", def.CNIMTU, "MTU of pod interfaces, written as membrane-cni's \"mtu\" into the conflist")
	fs.Bool("cni-conf-loopback", def.CNIConfLoopback,
		"Chain the loopback plugin after membrane-cni in the conflist, for runtimes that do not bring up the pod's lo themselves (containerd's CRI and podman do; cnitool does not)")
	fs.Bool("remove-cni-conf-on-shutdown", def.RemoveCNIConfOnShutdown,
		"Remove the conflist written by --write-cni-conf-when-ready when the agent stops cleanly. Off by default: a restarting agent must not make kubelet think the node lost its network")
}

// DefaultConfig writes nothing; the systemd unit sets the path.
var DefaultConfig = Config{CNIMTU: DefaultMTU}

// Cell writes the conflist once the agent is ready.
var Cell = cell.Module(
	"cni-config",
	"CNI conflist written once the agent serves",

	cell.Config(DefaultConfig),
	cell.Invoke(register),
)

type params struct {
	cell.In

	Lifecycle cell.Lifecycle
	Log       *slog.Logger
	Config    Config
	API       apiserver.Config
	State     statedir.Config
	// Server is here for the order, not to be called: depending on it
	// makes the API server's start hook run before this cell's even in
	// a custom agent that lists the cells in another order.
	Server *apiserver.Server
}

func register(p params) error {
	path := p.Config.WriteCNIConfWhenReady
	if path == "" {
		if p.Config.RemoveCNIConfOnShutdown {
			return errors.New("--remove-cni-conf-on-shutdown needs --write-cni-conf-when-ready")
		}
		return nil
	}
	data, err := Conflist(Conf{Socket: p.API.Socket, StateDir: p.State.StateDir, MTU: p.Config.CNIMTU, Loopback: p.Config.CNIConfLoopback})
	if err != nil {
		return fmt.Errorf("--write-cni-conf-when-ready: %w", err)
	}
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			// A failure stops the agent: a node agent the runtime cannot
			// find is useless, and systemd's restart makes it loud.
			if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
				return fmt.Errorf("--write-cni-conf-when-ready: %w", err)
			}
			p.Log.Info("CNI configuration written: the runtime can attach pods now", "path", path)
			return nil
		},
		OnStop: func(cell.HookContext) error {
			// Runs before the API server stops (stop hooks run in reverse),
			// so the runtime stops finding the plugin before the socket goes.
			if !p.Config.RemoveCNIConfOnShutdown {
				return nil
			}
			switch outcome, err := removeIfOurs(path, data); {
			case err != nil:
				p.Log.Warn("Could not remove the CNI configuration", "path", path, "error", err)
			case outcome == removed:
				p.Log.Info("CNI configuration removed (--remove-cni-conf-on-shutdown)", "path", path)
			case outcome == notOurs:
				p.Log.Info("CNI configuration changed since the agent wrote it; leaving it", "path", path)
			}
			return nil
		},
	})
	return nil
}

// removeIfOurs removes path only if it still holds what the agent wrote:
// an operator's edit, or a newer agent's file, is not ours to delete.
func removeIfOurs(path string, ours []byte) (removeOutcome, error) {
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return alreadyGone, nil
	}
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(cur, ours) {
		return notOurs, nil
	}
	return removed, os.Remove(path)
}

type removeOutcome int

const (
	removed removeOutcome = iota + 1
	alreadyGone
	notOurs
)
