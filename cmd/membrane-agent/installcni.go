package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/cniconfig"
	"github.com/membrane-net/membrane/internal/atomicfile"
)

// installCNICmd is `membrane-agent install-cni`: the plugin binary into
// the CNI bin dir, and, only if asked, a conflist written right away.
func installCNICmd() *cobra.Command {
	var (
		binDir, plugin, conf, socket, stateDir string
		mtu                                    int
		loopback                               bool
	)
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Install the membrane-cni plugin into the CNI bin dir",
		Long: `install-cni copies the membrane-cni binary (by default the one next to this
membrane-agent binary) into --cni-bin-dir, atomically (a runtime executing the
old binary is not disturbed and never sees a partial file), and checks that the
installed copy runs.

The conflist is better left to the agent: run it with
--write-cni-conf-when-ready ` + cniconfig.DefaultPath + ` and the runtime
finds the network only once the agent serves. --cni-conf writes the conflist
now instead, for setups that manage it without the agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if plugin == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("locating membrane-agent to find membrane-cni next to it: %w (give --plugin)", err)
				}
				plugin = filepath.Join(filepath.Dir(self), cniconfig.PluginName)
				if _, err := os.Stat(plugin); errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no %s next to membrane-agent (%s): give its path with --plugin", cniconfig.PluginName, plugin)
				}
			}
			dst, err := cniconfig.InstallPlugin(context.Background(), plugin, binDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s\n", dst)
			if conf == "" {
				return nil
			}
			data, err := cniconfig.Conflist(cniconfig.Conf{Socket: socket, StateDir: stateDir, MTU: mtu, Loopback: loopback})
			if err != nil {
				return fmt.Errorf("--cni-conf: %w", err)
			}
			if err := atomicfile.WriteFile(conf, data, 0o644); err != nil {
				return fmt.Errorf("--cni-conf: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", conf)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&binDir, "cni-bin-dir", cniconfig.DefaultBinDir, "CNI plugin directory of the runtime (containerd's bin_dir, podman's cni_plugin_dirs)")
	f.StringVar(&plugin, "plugin", "", "membrane-cni binary to install (default: the one next to membrane-agent)")
	f.StringVar(&conf, "cni-conf", "", "Also write the conflist to this path now (e.g. "+cniconfig.DefaultPath+"); default: leave it to the agent's --write-cni-conf-when-ready")
	f.StringVar(&socket, "socket", apiserver.DefaultConfig.Socket, "The agent's API socket, written into the conflist (with --cni-conf)")
	f.StringVar(&stateDir, "state-dir", "/var/lib/membrane", "The agent's state dir, written into the conflist (with --cni-conf): membrane-cni queues there the DELs it cannot hand to a stopped agent")
	f.IntVar(&mtu, "cni-mtu", cniconfig.DefaultMTU, "Pod MTU written into the conflist (with --cni-conf)")
	f.BoolVar(&loopback, "cni-conf-loopback", false, "Chain the loopback plugin in the conflist (with --cni-conf), for runtimes that do not bring up lo themselves")
	return cmd
}
