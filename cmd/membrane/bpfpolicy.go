package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/datapath/maps"
)

func (a *app) bpfPolicyCommand(root *string) *cobra.Command {
	var raw bool
	get := &cobra.Command{
		Use:   "get ENDPOINT-ID",
		Short: "Show an endpoint's entries in the policy map: who may talk to it, on which ports",
		Long: `get prints the entries of the pinned policy map (` + maps.PolicyMapName + `) for one endpoint,
and whether each direction is enforced (from ` + maps.EndpointsMapName + `): in an enforced
direction only what an entry allows passes (default deny); a deny entry wins
over any allow. Identity "any" (0) matches every peer; protocol "any" every
protocol and port; ICMP entries match the ICMP type in the PORT column.

The map is an LPM trie, so a port range is stored as a few prefixes; get
merges adjacent ones back into ranges (--raw prints one line per map entry).
Identity labels come from the agent (GET /v1/identity) when it answers; the
command works without it, showing numbers only.`,
		Example: `  membrane bpf policy get 1234
  membrane bpf policy get 1234 -o json
  membrane bpf policy get 1234 --raw`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 16)
			if err != nil || id == 0 {
				return fmt.Errorf("invalid endpoint ID %q: want a number (see membrane endpoint list or membrane bpf endpoint list)", args[0])
			}
			pol, err := readEndpointPolicy(*root, uint16(id), raw)
			if err != nil {
				return err
			}
			a.addIdentityLabels(cmd.Context(), pol)
			return a.render(pol, func(w io.Writer) error { return printEndpointPolicy(w, pol) })
		},
	}
	get.Flags().BoolVar(&raw, "raw", false, "One line per map entry, port ranges not merged")

	var listRaw bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every entry of the policy map, of all endpoints, with their count",
		Long: `list prints every entry of the pinned policy map (` + maps.PolicyMapName + `), of all endpoints,
sorted by endpoint, direction, identity, protocol and port, and how many map
entries there are. Adjacent port-range prefixes are merged as in "get"
(--raw: one line per map entry). An endpoint gone should leave no entry
behind: a count that grows while the number of endpoints does not is a leak.`,
		Example: `  membrane bpf policy list
  membrane bpf policy list -o json
  membrane bpf policy list --raw`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			l, err := readPolicyMap(*root, listRaw)
			if err != nil {
				return err
			}
			return a.render(l, func(w io.Writer) error { return printPolicyList(w, l) })
		},
	}
	list.Flags().BoolVar(&listRaw, "raw", false, "One line per map entry, port ranges not merged")
	return groupCommand("policy", "The policy map: endpoint x peer identity x protocol x port -> allow/deny", "",
		"  membrane bpf policy list\n  membrane bpf policy get 1234", list, get)
}

// policyList is the whole policy map.
type policyList struct {
	// MapEntries counts the map's entries (LPM keys), whatever the merging.
	MapEntries int               `json:"map-entries"`
	Entries    []policyListEntry `json:"entries"`
}

type policyListEntry struct {
	EndpointID uint16 `json:"endpoint-id"`
	policyEntryOutput
}

func readPolicyMap(root string, raw bool) (*policyList, error) {
	byEP := map[uint16][]policyEntryOutput{}
	l := &policyList{Entries: []policyListEntry{}}
	err := dumpPinned(root, maps.PolicyMapName, func(k maps.PolicyKey, v maps.PolicyValue) {
		l.MapEntries++
		byEP[k.EndpointID] = append(byEP[k.EndpointID], policyEntryFromKey(k, v))
	})
	if err != nil {
		return nil, err
	}
	eps := make([]uint16, 0, len(byEP))
	for ep := range byEP {
		eps = append(eps, ep)
	}
	slices.Sort(eps)
	for _, ep := range eps {
		for _, e := range sortPolicyEntries(byEP[ep], raw) {
			l.Entries = append(l.Entries, policyListEntry{EndpointID: ep, policyEntryOutput: e})
		}
	}
	return l, nil
}

func printPolicyList(w io.Writer, l *policyList) error {
	if len(l.Entries) > 0 {
		t := newTable(w, "ENDPOINT", "DIRECTION", "IDENTITY", "PROTOCOL", "PORT", "VERDICT")
		for _, e := range l.Entries {
			t.row(strconv.Itoa(int(e.EndpointID)), e.Direction, e.identityString(), e.Protocol, e.portString(), e.Verdict)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "%d entries in %s.\n", l.MapEntries, maps.PolicyMapName)
	return err
}

// endpointPolicy is an endpoint's slice of the policy map.
type endpointPolicy struct {
	EndpointID uint16 `json:"endpoint-id"`
	// InEndpointsMap is false when the endpoints map has no entry for the
	// endpoint: its programs then drop everything (no endpoint).
	InEndpointsMap  bool                `json:"in-endpoints-map"`
	IngressEnforced bool                `json:"ingress-enforced"`
	EgressEnforced  bool                `json:"egress-enforced"`
	Entries         []policyEntryOutput `json:"entries"`
	// LabelsNote says why labels are missing, if they are.
	LabelsNote string `json:"-"`
}

// policyEntryOutput is one entry (or merged range of entries).
type policyEntryOutput struct {
	Direction string   `json:"direction"`
	Identity  uint32   `json:"identity"`
	Labels    []string `json:"labels,omitempty"`
	// Protocol is "any" or an IP protocol name; ProtocolNumber is 0 for any.
	Protocol       string `json:"protocol"`
	ProtocolNumber uint8  `json:"protocol-number"`
	// Port..EndPort is the range of destination ports (ICMP types)
	// matched: 0..65535 for all, Port == EndPort for one.
	Port    uint16 `json:"port"`
	EndPort uint16 `json:"end-port"`
	Verdict string `json:"verdict"`

	dir uint8
}

func readEndpointPolicy(root string, ep uint16, raw bool) (*endpointPolicy, error) {
	pol := &endpointPolicy{EndpointID: ep, Entries: []policyEntryOutput{}}

	err := dumpPinned(root, maps.EndpointsMapName, func(_ maps.EndpointKey, v maps.EndpointValue) {
		if v.EndpointID == ep {
			pol.InEndpointsMap = true
			pol.IngressEnforced = v.Flags&maps.EndpointFlagIngressEnforced != 0
			pol.EgressEnforced = v.Flags&maps.EndpointFlagEgressEnforced != 0
		}
	})
	if err != nil {
		return nil, err
	}
	err = dumpPinned(root, maps.PolicyMapName, func(k maps.PolicyKey, v maps.PolicyValue) {
		if k.EndpointID == ep {
			pol.Entries = append(pol.Entries, policyEntryFromKey(k, v))
		}
	})
	if err != nil {
		return nil, err
	}
	pol.Entries = sortPolicyEntries(pol.Entries, raw)
	return pol, nil
}

// sortPolicyEntries sorts one endpoint's entries and, unless raw, merges
// adjacent port ranges.
func sortPolicyEntries(es []policyEntryOutput, raw bool) []policyEntryOutput {
	slices.SortFunc(es, func(x, y policyEntryOutput) int {
		return cmp.Or(cmp.Compare(x.dir, y.dir), cmp.Compare(x.Identity, y.Identity),
			cmp.Compare(x.ProtocolNumber, y.ProtocolNumber), cmp.Compare(x.Port, y.Port), cmp.Compare(x.EndPort, y.EndPort),
			cmp.Compare(x.Verdict, y.Verdict))
	})
	if raw {
		return es
	}
	return mergePortRanges(es)
}

// policyEntryFromKey decodes an LPM key: its prefix length says whether
// the protocol and how many bits of the port take part.
func policyEntryFromKey(k maps.PolicyKey, v maps.PolicyValue) policyEntryOutput {
	e := policyEntryOutput{
		Direction: maps.DirectionName(k.Direction),
		dir:       k.Direction,
		Identity:  k.Identity,
		Protocol:  maps.AnyName,
		Verdict:   "allow",
	}
	if v.Flags&maps.PolicyFlagDeny != 0 {
		e.Verdict = "deny"
	}
	if k.PrefixLen >= maps.PolicyPrefixProto {
		e.ProtocolNumber = k.Protocol
		e.Protocol = maps.ProtocolName(k.Protocol)
	}
	e.Port, e.EndPort = k.Ports()
	return e
}

// mergePortRanges joins entries (sorted) that differ only by adjacent
// port ranges.
func mergePortRanges(in []policyEntryOutput) []policyEntryOutput {
	out := in[:0:0]
	for _, e := range in {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.dir == e.dir && last.Identity == e.Identity && last.ProtocolNumber == e.ProtocolNumber &&
				last.Protocol == e.Protocol && last.Verdict == e.Verdict && uint32(last.EndPort)+1 == uint32(e.Port) {
				last.EndPort = e.EndPort
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// addIdentityLabels asks the agent for the labels of the identities in
// pol; the agent being down only costs the labels.
func (a *app) addIdentityLabels(parent context.Context, pol *endpointPolicy) {
	if len(pol.Entries) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, min(a.timeout, 3*time.Second))
	defer cancel()
	ids, err := client.New(a.socket).ListIdentities(ctx)
	if err != nil {
		pol.LabelsNote = "identity labels not shown: " + a.describe(err)
		return
	}
	labels := map[uint32][]string{}
	for _, id := range ids {
		labels[id.ID] = sortedCopy(id.Labels)
	}
	for i := range pol.Entries {
		pol.Entries[i].Labels = labels[pol.Entries[i].Identity]
	}
}

func printEndpointPolicy(w io.Writer, pol *endpointPolicy) error {
	enforced := func(b bool) string {
		if b {
			return "enforced (only what an entry allows passes)"
		}
		return "not enforced (everything passes unless denied)"
	}
	if pol.InEndpointsMap {
		fmt.Fprintf(w, "Endpoint %d: ingress %s; egress %s\n", pol.EndpointID, enforced(pol.IngressEnforced), enforced(pol.EgressEnforced))
	} else {
		fmt.Fprintf(w, "Endpoint %d: not in %s (no interface attached with it: its programs would drop every packet)\n", pol.EndpointID, maps.EndpointsMapName)
	}
	if len(pol.Entries) == 0 {
		_, err := fmt.Fprintf(w, "No entries in %s for endpoint %d.\n", maps.PolicyMapName, pol.EndpointID)
		return err
	}
	t := newTable(w, "DIRECTION", "IDENTITY", "LABELS", "PROTOCOL", "PORT", "VERDICT")
	for _, e := range pol.Entries {
		t.row(e.Direction, e.identityString(), dash(strings.Join(e.Labels, "\n")), e.Protocol, e.portString(), e.Verdict)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if pol.LabelsNote != "" {
		_, err := fmt.Fprintf(w, "(%s)\n", pol.LabelsNote)
		return err
	}
	return nil
}

func (e policyEntryOutput) identityString() string {
	if e.Identity == 0 {
		return maps.AnyName
	}
	return strconv.FormatUint(uint64(e.Identity), 10)
}

func (e policyEntryOutput) portString() string {
	switch {
	case e.Port == 0 && e.EndPort == 0xffff:
		return maps.AnyName
	case e.Port == e.EndPort:
		return strconv.Itoa(int(e.Port))
	}
	return fmt.Sprintf("%d-%d", e.Port, e.EndPort)
}
