package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/models"
)

func (a *app) ipamCommand() *cobra.Command {
	return groupCommand("ipam", "Show the agent's IP address allocations",
		`The agent hands pod addresses out of the node's pod CIDR (--pod-cidr, and
--pod-cidr-v6 when set; with --ipam=kubernetes, spec.podCIDRs of the node's
Node object). Each allocation has an owner: the CNI attachment
"container-id:ifname" it was made for.`,
		`  membrane ipam list`,
		a.ipamListCommand(),
	)
}

func (a *app) ipamListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List allocated addresses and their owners",
		Long: `list prints every allocated address, sorted by address (IPv4 first): its
owner, its pod when known and when it was allocated.`,
		Example: `  membrane ipam list
  membrane ipam list -o json | jq -r '.[].ip'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			ips, err := c.ListIPs(ctx)
			if err != nil {
				return fmt.Errorf("list IP allocations: %w", err)
			}
			if ips == nil {
				ips = []models.IPAMAllocation{}
			}
			slices.SortStableFunc(ips, func(x, y models.IPAMAllocation) int { return compareIPs(x.IP, y.IP) })
			return a.render(ips, func(w io.Writer) error {
				t := newTable(w, "IP", "OWNER", "POD", "CREATED")
				for _, ip := range ips {
					created := "-"
					if !ip.Created.IsZero() {
						created = ip.Created.Format(time.RFC3339)
					}
					t.row(ip.IP, dash(ip.Owner), dash(ip.Pod), created)
				}
				return t.flush()
			})
		},
	}
}

// compareIPs orders addresses numerically (IPv4 before IPv6); strings that
// are not addresses sort after them, as text.
func compareIPs(x, y string) int {
	ax, errx := netip.ParseAddr(x)
	ay, erry := netip.ParseAddr(y)
	switch {
	case errx == nil && erry == nil:
		return ax.Compare(ay)
	case errx == nil:
		return -1
	case erry == nil:
		return 1
	}
	return cmp.Compare(strings.ToLower(x), strings.ToLower(y))
}
