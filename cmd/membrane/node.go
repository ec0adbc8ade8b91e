package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) nodeCommand() *cobra.Command {
	return groupCommand("node", "List the nodes of the cluster",
		`In Kubernetes mode every agent announces its node in a CiliumNode (addresses,
pod CIDRs) and watches the others': it routes each other node's pod CIDRs via
that node's InternalIP and gives the node's addresses the identity remote-node.`,
		`  membrane node list
  membrane node list -o json`,
		a.nodeListCommand(),
	)
}

// nodeRow is a row of the agent's nodes table as /statedb/ serves it
// (statedb/tables.Node's JSON; the CLI links no schema).
type nodeRow struct {
	Name        string          `json:"name"`
	Local       bool            `json:"local,omitempty"`
	InternalIPs []string        `json:"internal-ips,omitempty"`
	OtherIPs    []string        `json:"other-ips,omitempty"`
	PodCIDRs    []string        `json:"pod-cidrs,omitempty"`
	Refused     string          `json:"refused,omitempty"`
	UpdatedAt   time.Time       `json:"updated-at"`
	Routes      json.RawMessage `json:"routes"`
}

// nodeInfo is what `node list` prints.
type nodeInfo struct {
	Name      string    `json:"name"`
	Local     bool      `json:"local"`
	Addresses []string  `json:"addresses"`
	PodCIDRs  []string  `json:"podCIDRs"`
	Routes    string    `json:"routes"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (a *app) nodeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the cluster's nodes, their pod CIDRs and whether they are routed",
		Long: `list prints every node of the cluster the agent knows (this one marked local):
its addresses (InternalIP first), its pod CIDRs, the state of the routes to
them and when its row last changed. ROUTES is "installed" when the kernel has
a route to each pod CIDR via the node's InternalIP, "pending" or "error: why"
while it does not, "local" for this node, and "refused: why" for a node whose
pod CIDRs are not routed (they overlap another node's). Empty outside
Kubernetes mode.`,
		Example: `  membrane node list`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			raw, err := c.StateDBDump(ctx, "nodes")
			if err != nil {
				return fmt.Errorf("list nodes: %w", err)
			}
			var dump map[string][]nodeRow
			if err := json.Unmarshal(raw, &dump); err != nil {
				return fmt.Errorf("list nodes: unexpected answer from the agent: %w", err)
			}
			rows, ok := dump["nodes"]
			if !ok {
				return fmt.Errorf("list nodes: the agent has no nodes table (an older agent?)")
			}
			infos := make([]nodeInfo, 0, len(rows))
			for _, r := range rows {
				infos = append(infos, nodeInfo{
					Name: r.Name, Local: r.Local, Addresses: nonNil(slices.Concat(r.InternalIPs, r.OtherIPs)),
					PodCIDRs: nonNil(r.PodCIDRs), Routes: routesText(r), UpdatedAt: r.UpdatedAt,
				})
			}
			slices.SortFunc(infos, func(x, y nodeInfo) int { return cmp.Compare(x.Name, y.Name) })
			return a.render(infos, func(w io.Writer) error {
				t := newTable(w, "NAME", "ADDRESSES", "POD CIDRS", "ROUTES", "UPDATED")
				for _, n := range infos {
					name := n.Name
					if n.Local {
						name += " (local)"
					}
					t.row(name, dash(strings.Join(n.Addresses, "\n")), dash(strings.Join(n.PodCIDRs, "\n")), n.Routes,
						n.UpdatedAt.UTC().Format(time.RFC3339))
				}
				return t.flush()
			})
		},
	}
}

// routesText says whether the node's routes are in the kernel.
func routesText(r nodeRow) string {
	switch {
	case r.Local:
		return "local"
	case r.Refused != "":
		return "refused: " + oneLine(r.Refused)
	case len(r.PodCIDRs) == 0:
		return "-"
	}
	s, ok := reconcilerStatusText(r.Routes)
	switch {
	case !ok:
		return "unknown"
	case s == "Done":
		return "installed"
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
