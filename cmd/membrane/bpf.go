package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/datapath/maps"
)

// DefaultBPFRoot is where the agent pins its maps unless --bpf-root says otherwise.
const DefaultBPFRoot = "/sys/fs/bpf/membrane"

func (a *app) bpfCommand() *cobra.Command {
	var root string
	cmd := groupCommand("bpf", "Read the datapath's pinned BPF maps directly",
		`The bpf commands open the maps the agent pinned under --bpf-root read-only and
print what the datapath enforces right now. They do not need the agent, so
they work while it is down (the maps outlive it) and show whether the
agent's tables ("membrane statedb ipcache", "membrane statedb bpf-endpoints")
reached the kernel; "bpf policy get" asks the agent for identity labels when
it answers. They need root (CAP_BPF) and a mounted bpffs.`,
		`  membrane bpf ipcache list
  membrane bpf endpoint list --bpf-root /sys/fs/bpf/membrane-test
  membrane bpf policy get 1234
  membrane bpf policy list
  membrane bpf ct list
  membrane bpf metrics`,
		a.bpfIPCacheCommand(&root),
		a.bpfEndpointCommand(&root),
		a.bpfPolicyCommand(&root),
		a.bpfCTCommand(&root),
		a.bpfMetricsCommand(&root),
	)
	cmd.PersistentFlags().StringVar(&root, "bpf-root", DefaultBPFRoot, "bpffs directory the agent pins its maps in (the agent's --bpf-root)")
	return cmd
}

func (a *app) bpfIPCacheCommand(root *string) *cobra.Command {
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the ipcache map: prefix -> security identity",
		Long: `list prints every entry of the pinned ipcache map (` + maps.IPCacheMapName + `), an LPM trie
from address prefix to the security identity of whatever sits behind it.
The datapath looks a packet's peer up in it. Sorted by address, IPv4 first.

SOURCE is who wrote the entry, from the agent's ipcache table when the
agent answers: endpoint (a pod of this node), host (this node's
addresses), cidr-policy (a CIDR rule), remote (a pod of another node,
from its CiliumEndpoint). "-" when the agent does not answer or has no
row for the prefix (an entry it has not pruned yet).`,
		Example: `  membrane bpf ipcache list
  membrane bpf ipcache list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := readIPCache(*root)
			if err != nil {
				return err
			}
			sources := a.ipcacheSources(cmd)
			for i := range entries {
				entries[i].Source = sources[entries[i].Prefix]
			}
			return renderRows(a, entries, []string{"PREFIX", "IDENTITY", "IFINDEX", "SOURCE"}, func(e ipcacheEntry) []string {
				return []string{e.Prefix, strconv.FormatUint(uint64(e.Identity), 10), ifindexCell(e.IfIndex), dash(e.Source)}
			})
		},
	}
	return groupCommand("ipcache", "The ipcache map: prefix -> security identity", "", "  membrane bpf ipcache list", list)
}

// ipcacheEntry is one entry of the ipcache map as the CLI prints it.
type ipcacheEntry struct {
	Prefix   string `json:"prefix"`
	Identity uint32 `json:"identity"`
	// IfIndex is the host veth of the local endpoint behind the prefix
	// (0: none), where eBPF host routing delivers its packets.
	IfIndex uint32 `json:"ifindex,omitempty"`
	// Source is the writer of the agent's row for the prefix, "" if the
	// agent did not answer or has none.
	Source string `json:"source,omitempty"`

	sortKey netip.Prefix
}

// ipcacheSources asks the agent which cell wrote each prefix (its ipcache
// table); none if it does not answer: the maps are read without it.
func (a *app) ipcacheSources(cmd *cobra.Command) map[string]string {
	c, ctx, cancel := a.client(cmd)
	defer cancel()
	out := map[string]string{}
	raw, err := c.StateDBDump(ctx, "ipcache")
	if err != nil {
		return out
	}
	var dump map[string][]struct {
		Prefix string `json:"prefix"`
		Source string `json:"source"`
	}
	if json.Unmarshal(raw, &dump) != nil {
		return out
	}
	for _, row := range dump["ipcache"] {
		if p, err := netip.ParsePrefix(row.Prefix); err == nil {
			out[p.String()] = row.Source
		}
	}
	return out
}

func readIPCache(root string) ([]ipcacheEntry, error) {
	entries := []ipcacheEntry{}
	err := dumpPinned(root, maps.IPCacheMapName, func(k maps.IPCacheKey, v maps.IPCacheValue) {
		e := ipcacheEntry{Identity: v.Identity, IfIndex: v.IfIndex}
		if p, err := k.Prefix(); err == nil {
			e.Prefix, e.sortKey = p.String(), p
		} else {
			e.Prefix = fmt.Sprintf("invalid(family=%d, len=%d)", k.Family, k.PrefixLen)
		}
		entries = append(entries, e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(entries, func(x, y ipcacheEntry) int {
		return cmp.Or(
			cmp.Compare(boolRank(!x.sortKey.IsValid()), boolRank(!y.sortKey.IsValid())),
			x.sortKey.Addr().Compare(y.sortKey.Addr()),
			cmp.Compare(x.sortKey.Bits(), y.sortKey.Bits()),
			cmp.Compare(x.Prefix, y.Prefix))
	})
	return entries, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (a *app) bpfEndpointCommand(root *string) *cobra.Command {
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the endpoints map: host interface -> endpoint, identity, addresses",
		Long: `list prints every entry of the pinned endpoints map (` + maps.EndpointsMapName + `), keyed by the
ifindex of an endpoint's host-side veth: the endpoint ID, its security
identity, addresses and MACs the programs on that interface use. INTERFACE is
the name of that ifindex in this network namespace, if it exists. Sorted by
endpoint ID.`,
		Example: `  membrane bpf endpoint list
  membrane bpf endpoint list -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := readEndpointMap(*root)
			if err != nil {
				return err
			}
			header := []string{"ENDPOINT", "IFINDEX", "INTERFACE", "IDENTITY", "IPV4", "IPV6", "MAC", "HOST MAC"}
			return renderRows(a, entries, header, func(e endpointMapEntry) []string {
				return []string{strconv.Itoa(int(e.EndpointID)), strconv.Itoa(int(e.IfIndex)), dash(e.Interface),
					strconv.FormatUint(uint64(e.Identity), 10), dash(e.IPv4), dash(e.IPv6), dash(e.MAC), dash(e.HostMAC)}
			})
		},
	}
	return groupCommand("endpoint", "The endpoints map: host interface -> endpoint", "", "  membrane bpf endpoint list", list)
}

// endpointMapEntry is one entry of the endpoints map as the CLI prints it.
type endpointMapEntry struct {
	IfIndex    uint32 `json:"ifindex"`
	Interface  string `json:"interface,omitempty"`
	EndpointID uint16 `json:"endpoint-id"`
	Identity   uint32 `json:"identity"`
	IPv4       string `json:"ipv4,omitempty"`
	IPv6       string `json:"ipv6,omitempty"`
	MAC        string `json:"mac,omitempty"`
	HostMAC    string `json:"host-mac,omitempty"`
	Flags      uint16 `json:"flags"`
}

func readEndpointMap(root string) ([]endpointMapEntry, error) {
	entries := []endpointMapEntry{}
	err := dumpPinned(root, maps.EndpointsMapName, func(k maps.EndpointKey, v maps.EndpointValue) {
		e := endpointMapEntry{
			IfIndex:    k.IfIndex,
			EndpointID: v.EndpointID,
			Identity:   v.Identity,
			MAC:        macString(v.MAC),
			HostMAC:    macString(v.HostMAC),
			Flags:      v.Flags,
		}
		v4, v6 := v.Addrs()
		if v4.IsValid() {
			e.IPv4 = v4.String()
		}
		if v6.IsValid() {
			e.IPv6 = v6.String()
		}
		if ifc, err := net.InterfaceByIndex(int(k.IfIndex)); err == nil {
			e.Interface = ifc.Name
		}
		entries = append(entries, e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(entries, func(x, y endpointMapEntry) int {
		return cmp.Or(cmp.Compare(x.EndpointID, y.EndpointID), cmp.Compare(x.IfIndex, y.IfIndex))
	})
	return entries, nil
}

func macString(b [6]byte) string {
	if b == [6]byte{} {
		return ""
	}
	return net.HardwareAddr(b[:]).String()
}

// renderRows prints the entries of a bpf command: as JSON or YAML when -o
// asks for it, else as a table of header and one row per entry.
func renderRows[E any](a *app, entries []E, header []string, row func(E) []string) error {
	return a.render(entries, func(w io.Writer) error {
		t := newTable(w, header...)
		for _, e := range entries {
			t.row(row(e)...)
		}
		return t.flush()
	})
}

// dumpPinned calls each with every entry of the map pinned as name under
// root, in the map's order: the one loop of the bpf commands. The error of
// opening the pin says what to do about it (bpfHint).
func dumpPinned[K, V any](root, name string, each func(K, V)) error {
	m, err := maps.OpenPinned(root, name)
	if err != nil {
		return bpfHint(err)
	}
	defer m.Close()
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		each(k, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

// bpfHint adds what to do to the common failures of opening a pin.
func bpfHint(err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w (this kernel lacks BPF support)", err)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w (reading BPF maps needs root or CAP_BPF)", err)
	}
	return err
}

// ifindexCell prints an ipcache entry's ifindex, "-" for none.
func ifindexCell(i uint32) string {
	if i == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(i), 10)
}
