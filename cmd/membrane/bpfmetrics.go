package main

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/datapath/maps"
)

func (a *app) bpfMetricsCommand(root *string) *cobra.Command {
	var endpoint uint16
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Show the datapath's packet and byte counters by endpoint, direction and reason",
		Long: `metrics prints the pinned metrics map (` + maps.MetricsMapName + `), summed over CPUs: for every
endpoint and direction, how many packets (and bytes) the datapath forwarded
or dropped, and why. Forward reasons: allowed-by-policy (a new flow a policy
entry allows), established (conntrack: a known flow or its reply),
policy-not-enforced, not-ip. Drop reasons: policy-denied (no entry allows
it), policy-deny-rule (a deny entry), spoofed-source, no-endpoint (endpoint
0: an interface without entry in ` + maps.EndpointsMapName + `), malformed, fragment-no-first (a
later fragment whose first fragment was not seen or not allowed),
fragment-too-short (a first fragment without its whole L4 header),
ipv6-ext-headers (more IPv6 extension headers than the datapath walks,
or an invalid chain). Later fragments that pass count under their first
fragment's reason. A row with
verdict "-" and reason monitor-event-lost counts monitor events the ring
buffer had no room for (see membrane monitor --stats). Counters only grow;
they survive agent restarts.`,
		Example: `  membrane bpf metrics
  membrane bpf metrics --endpoint 1234
  membrane bpf metrics -o json | jq '.[] | select(.verdict == "dropped")'`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := readMetrics(*root, endpoint)
			if err != nil {
				return err
			}
			header := []string{"ENDPOINT", "DIRECTION", "VERDICT", "REASON", "PACKETS", "BYTES"}
			return renderRows(a, entries, header, func(e metricsEntry) []string {
				return []string{strconv.Itoa(int(e.EndpointID)), e.Direction, e.Verdict, e.Reason,
					strconv.FormatUint(e.Packets, 10), strconv.FormatUint(e.Bytes, 10)}
			})
		},
	}
	cmd.Flags().Uint16Var(&endpoint, "endpoint", 0, "Only the counters of this endpoint ID")
	return cmd
}

// metricsEntry is one counter, summed over CPUs.
type metricsEntry struct {
	EndpointID uint16 `json:"endpoint-id"`
	Direction  string `json:"direction"`
	Verdict    string `json:"verdict"`
	Reason     string `json:"reason"`
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`

	dir, reason uint8
}

func readMetrics(root string, endpoint uint16) ([]metricsEntry, error) {
	entries := []metricsEntry{}
	// A per-CPU map: one value per possible CPU.
	err := dumpPinned(root, maps.MetricsMapName, func(k maps.MetricsKey, perC []maps.MetricsValue) {
		if endpoint != 0 && k.EndpointID != endpoint {
			return
		}
		e := metricsEntry{
			EndpointID: k.EndpointID,
			Direction:  maps.DirectionName(k.Dir),
			Verdict:    "forwarded",
			Reason:     maps.ReasonName(k.Reason),
			dir:        k.Dir,
			reason:     k.Reason,
		}
		switch {
		case k.Reason == maps.ReasonEventLost:
			e.Verdict = "-" // not a packet: monitor events the ring buffer had no room for
		case maps.IsDrop(k.Reason):
			e.Verdict = "dropped"
		}
		for _, v := range perC {
			e.Packets += v.Packets
			e.Bytes += v.Bytes
		}
		entries = append(entries, e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(x, y metricsEntry) int {
		return cmp.Or(cmp.Compare(x.EndpointID, y.EndpointID), cmp.Compare(x.dir, y.dir), cmp.Compare(x.reason, y.reason))
	})
	return entries, nil
}
