package main

import (
	"cmp"
	"fmt"
	"io"
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
0: an interface without entry in ` + maps.EndpointsMapName + `), malformed. A row with
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
			return a.render(entries, func(w io.Writer) error {
				t := newTable(w, "ENDPOINT", "DIRECTION", "VERDICT", "REASON", "PACKETS", "BYTES")
				for _, e := range entries {
					t.row(strconv.Itoa(int(e.EndpointID)), e.Direction, e.Verdict, e.Reason,
						strconv.FormatUint(e.Packets, 10), strconv.FormatUint(e.Bytes, 10))
				}
				return t.flush()
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
	m, err := maps.OpenPinned(root, maps.MetricsMapName)
	if err != nil {
		return nil, bpfHint(err)
	}
	defer m.Close()
	entries := []metricsEntry{}
	var (
		k    maps.MetricsKey
		perC []maps.MetricsValue
	)
	it := m.Iterate()
	for it.Next(&k, &perC) {
		if endpoint != 0 && k.EndpointID != endpoint {
			continue
		}
		e := metricsEntry{
			EndpointID: k.EndpointID,
			Direction:  directionName(k.Dir),
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
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", maps.MetricsMapName, err)
	}
	slices.SortFunc(entries, func(x, y metricsEntry) int {
		return cmp.Or(cmp.Compare(x.EndpointID, y.EndpointID), cmp.Compare(x.dir, y.dir), cmp.Compare(x.reason, y.reason))
	})
	return entries, nil
}
