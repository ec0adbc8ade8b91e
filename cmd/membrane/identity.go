package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/models"
)

func (a *app) identityCommand() *cobra.Command {
	return groupCommand("identity", "List and inspect security identities",
		`A security identity is the number the datapath enforces policy against. Endpoints
with the same security labels share one. 1..10 are reserved (host, world,
unmanaged, health, init, remote-node, kube-apiserver, ingress, world-ipv4,
world-ipv6); endpoints get identities from 256 up.`,
		`  membrane identity list
  membrane identity get 256`,
		a.identityListCommand(),
		a.identityGetCommand(),
	)
}

func (a *app) identityListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List identities with their labels and how many endpoints use them",
		Long: `list prints every identity the agent knows, reserved ones included, sorted by
number: its security labels (one per line) and how many local endpoints use
it, and its source: reserved (defined by the agent), local (allocated by this
agent alone), cluster (a CiliumIdentity shared by every node, in Kubernetes
mode: the list then holds the identities of the whole cluster) or cidr. A
local identity no endpoint uses any more is released and disappears; a
cluster one is deleted by the garbage collector once no endpoint of the
cluster uses it (--identity-gc-grace).`,
		Example: `  membrane identity list
  membrane identity list -o json | jq '.[] | select(.id >= 256)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			ids, err := c.ListIdentities(ctx)
			if err != nil {
				return fmt.Errorf("list identities: %w", err)
			}
			if ids == nil {
				ids = []models.Identity{}
			}
			for i := range ids {
				normalizeIdentity(&ids[i])
			}
			slices.SortStableFunc(ids, func(x, y models.Identity) int { return cmp.Compare(x.ID, y.ID) })
			return a.render(ids, func(w io.Writer) error {
				t := newTable(w, "ID", "SOURCE", "ENDPOINTS", "LABELS")
				for _, id := range ids {
					t.row(strconv.FormatUint(uint64(id.ID), 10), dash(id.Source), strconv.Itoa(id.Endpoints),
						dash(strings.Join(sortedCopy(id.Labels), "\n")))
				}
				return t.flush()
			})
		},
	}
}

func normalizeIdentity(id *models.Identity) {
	if id.Labels == nil {
		id.Labels = []string{}
	}
}

func (a *app) identityGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one identity",
		Long:  `get prints one identity: its number, its security labels and how many local endpoints use it.`,
		Example: `  membrane identity get 256
  membrane identity get 1 -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := strconv.ParseUint(args[0], 10, 32); err != nil {
				return fmt.Errorf("invalid identity %q: want a number (see membrane identity list)", args[0])
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			id, err := c.GetIdentity(ctx, args[0])
			if err != nil {
				return fmt.Errorf("get identity %s: %w", args[0], err)
			}
			normalizeIdentity(id)
			return a.render(id, func(w io.Writer) error {
				t := newTable(w)
				t.row("ID:", strconv.FormatUint(uint64(id.ID), 10))
				t.row("Labels:", dash(strings.Join(sortedCopy(id.Labels), "\n")))
				t.row("Source:", dash(id.Source))
				t.row("Endpoints:", strconv.Itoa(id.Endpoints))
				return t.flush()
			})
		},
	}
}
