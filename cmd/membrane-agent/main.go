// membrane-agent is the node daemon: a hive of Membrane's default cells.
// `membrane-agent hive` prints the cell graph; --help lists every flag.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/hive/cell"
	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/status"
)

func main() {
	var debug bool
	flags := status.Flags{}
	h := cells.NewAgentHive(cells.DefaultCells, cell.Provide(func() status.Flags { return flags }))
	cmd := &cobra.Command{
		Use:   "membrane-agent",
		Short: "Membrane node agent: endpoints, identities and their datapath",
		Long: `membrane-agent manages the pods of one node: it hands out their addresses,
derives security identities from their labels and keeps the eBPF datapath in
step. The CNI plugin (membrane-cni) and the debug CLI (membrane) talk to it
over the unix socket given by --socket.`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lvl := slog.LevelInfo
			if debug {
				lvl = slog.LevelDebug
			}
			return h.Run(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
		},
	}
	h.RegisterFlags(cmd.Flags())
	flags.FlagSet = cmd.Flags()
	cmd.Flags().BoolVar(&debug, "debug", false, "Log at debug level")
	cmd.AddCommand(h.Command(), installCNICmd())
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
