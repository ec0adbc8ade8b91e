// membrane-agent is the node daemon: a hive of Membrane's default cells.
// `membrane-agent hive` prints the cell graph (--dot: in Graphviz dot, as
// in docs/cell-graph.svg); --help lists every flag.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/status"
)

func main() {
	var debug bool
	flags := status.Flags{}
	h := newAgentHive(&flags)
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
	cmd.AddCommand(hiveCommand(h), installCNICmd())
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// newAgentHive is the stock agent: the default cells, and the status
// cell's view of the command line.
func newAgentHive(flags *status.Flags) *hive.Hive {
	return cells.NewAgentHive(cells.DefaultCells, cell.Provide(func() status.Flags { return *flags }))
}

// hiveCommand is hive's "hive" command (the cells, their constructors
// and hooks as text) with --dot for the cell graph in Graphviz dot.
func hiveCommand(h *hive.Hive) *cobra.Command {
	c := h.Command()
	var dot bool
	c.Flags().BoolVar(&dot, "dot", false, "Print the graph of the cells and the statedb tables between them in Graphviz dot (render: dot -Tsvg)")
	text := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if dot {
			return printCellGraph(h, cmd.OutOrStdout())
		}
		return text(cmd, args)
	}
	return c
}
