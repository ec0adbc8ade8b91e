package main

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/datapath/maps"
)

func (a *app) bpfCTCommand(root *string) *cobra.Command {
	var endpoint uint16
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the connection-tracking map: flows policy allowed, and how long ago they were seen",
		Long: `list prints every entry of the pinned conntrack map (` + maps.ConntrackMapName + `). The datapath
creates an entry when policy allows the first packet of a flow at an
endpoint's ingress or egress; later packets of the flow and its replies
pass on the entry without a policy lookup. AGE is the time since the flow's
last packet: the datapath ignores TCP entries idle for 6h and others idle
for 60s (the map is LRU, so stale entries linger until evicted). For ICMP
echo, the source port is the echo identifier. Sorted by endpoint,
direction, then addresses.`,
		Example: `  membrane bpf ct list
  membrane bpf ct list --endpoint 1234 -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := readConntrack(*root, endpoint, monotonicNow())
			if err != nil {
				return err
			}
			header := []string{"ENDPOINT", "DIRECTION", "PROTOCOL", "SOURCE", "DESTINATION", "AGE"}
			return renderRows(a, entries, header, func(e ctEntry) []string {
				return []string{strconv.Itoa(int(e.EndpointID)), e.Direction, e.Protocol,
					joinHostPort(e.Source, e.SourcePort), joinHostPort(e.Destination, e.DestinationPort), formatAge(e.age)}
			})
		},
	}
	list.Flags().Uint16Var(&endpoint, "endpoint", 0, "Only flows of this endpoint ID")
	return groupCommand("ct", "The connection-tracking map: flows allowed at each endpoint", "", "  membrane bpf ct list", list)
}

// ctEntry is one tracked flow as the CLI prints it.
type ctEntry struct {
	EndpointID      uint16 `json:"endpoint-id"`
	Direction       string `json:"direction"`
	Protocol        string `json:"protocol"`
	Source          string `json:"source"`
	SourcePort      uint16 `json:"source-port"`
	Destination     string `json:"destination"`
	DestinationPort uint16 `json:"destination-port"`
	// AgeSeconds is the time since the flow's last packet.
	AgeSeconds float64 `json:"age-seconds"`
	Flags      uint16  `json:"flags"`

	age          time.Duration
	dir          uint8
	saddr, daddr netip.Addr
}

// monotonicNow is CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns that
// stamps conntrack entries.
var monotonicNow = func() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func readConntrack(root string, endpoint uint16, now time.Duration) ([]ctEntry, error) {
	entries := []ctEntry{}
	err := dumpPinned(root, maps.ConntrackMapName, func(k maps.ConntrackKey, v maps.ConntrackValue) {
		if endpoint != 0 && v.EndpointID != endpoint {
			return
		}
		e := ctEntry{
			EndpointID:      v.EndpointID,
			Direction:       maps.DirectionName(k.Dir),
			Protocol:        maps.ProtocolName(k.Protocol),
			SourcePort:      binary.BigEndian.Uint16(k.SPort[:]),
			DestinationPort: binary.BigEndian.Uint16(k.DPort[:]),
			Flags:           v.Flags,
			dir:             k.Dir,
			saddr:           maps.Addr(k.Family, k.SAddr),
			daddr:           maps.Addr(k.Family, k.DAddr),
		}
		e.Source, e.Destination = addrString(e.saddr, k.Family), addrString(e.daddr, k.Family)
		// An entry stamped after now (clock read before iterating) is fresh.
		e.age = max(now-time.Duration(v.LastSeen), 0)
		e.AgeSeconds = e.age.Seconds()
		entries = append(entries, e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(entries, func(x, y ctEntry) int {
		return cmp.Or(cmp.Compare(x.EndpointID, y.EndpointID), cmp.Compare(x.dir, y.dir),
			x.saddr.Compare(y.saddr), x.daddr.Compare(y.daddr),
			cmp.Compare(x.SourcePort, y.SourcePort), cmp.Compare(x.DestinationPort, y.DestinationPort),
			cmp.Compare(x.Protocol, y.Protocol))
	})
	return entries, nil
}

func addrString(a netip.Addr, family uint8) string {
	if a.IsValid() {
		return a.String()
	}
	return fmt.Sprintf("invalid(family=%d)", family)
}

// joinHostPort renders ip:port ([ip]:port for IPv6), the address alone
// for port 0.
func joinHostPort(ip string, port uint16) string {
	if port == 0 {
		return ip
	}
	if a, err := netip.ParseAddr(ip); err == nil {
		return netip.AddrPortFrom(a, port).String()
	}
	return ip + ":" + strconv.Itoa(int(port))
}

// formatAge renders a duration for a table: 850ms, 42s, 3m7s, 2h4m.
func formatAge(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
