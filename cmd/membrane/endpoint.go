package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/labels"
)

// endpointIDHelp explains the ID argument of the endpoint commands.
const endpointIDHelp = `ID is the numeric endpoint ID or one of
  container-id:ID                   the endpoint of a container (one interface)
  cni-attachment-id:ID:IFNAME       a CNI attachment (container + interface in the pod)
  pod-name:NAMESPACE/NAME           the endpoint of a pod
  ipv4:ADDRESS                      the endpoint holding an address`

func (a *app) endpointCommand() *cobra.Command {
	return groupCommand("endpoint", "List, inspect, delete and relabel endpoints",
		`An endpoint is one pod attachment the agent manages: a veth, its addresses,
its labels and the security identity derived from them, and where it stands
in its lifecycle (waiting-for-identity, waiting-to-regenerate, regenerating,
ready, ...).

`+endpointIDHelp,
		`  membrane endpoint list
  membrane endpoint get pod-name:default/web
  membrane endpoint log 1234
  membrane endpoint labels 1234 --add container:tier=gold`,
		a.endpointListCommand(),
		a.endpointGetCommand(),
		a.endpointDeleteCommand(),
		a.endpointLogCommand(),
		a.endpointLabelsCommand(),
	)
}

func (a *app) endpointListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the agent's endpoints",
		Long: `list prints every endpoint the agent manages, sorted by ID: its state,
identity, pod, container attachment, host-side interface, addresses and
labels (one per line). -o json prints a JSON array of the agent's endpoint
documents (id, state, container-id, interface-name, k8s-namespace,
k8s-pod-name, labels, identity {id, labels}, addressing {ipv4, ipv6}, ...).`,
		Example: `  membrane endpoint list
  membrane endpoint list -o json | jq -r '.[] | select(.state != "ready") | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			eps, err := c.ListEndpoints(ctx)
			if err != nil {
				return fmt.Errorf("list endpoints: %w", err)
			}
			eps = normalizeEndpoints(eps)
			return a.render(eps, func(w io.Writer) error { return printEndpoints(w, eps) })
		},
	}
}

// normalizeEndpoints sorts by ID and never leaves labels null, so -o json
// prints a stable array with the same keys for every endpoint.
func normalizeEndpoints(eps []models.Endpoint) []models.Endpoint {
	if eps == nil {
		eps = []models.Endpoint{}
	}
	for i := range eps {
		normalizeEndpoint(&eps[i])
	}
	slices.SortStableFunc(eps, func(x, y models.Endpoint) int { return cmp.Compare(x.ID, y.ID) })
	return eps
}

func normalizeEndpoint(ep *models.Endpoint) {
	if ep.Labels == nil {
		ep.Labels = []string{}
	}
	if ep.Identity != nil && ep.Identity.Labels == nil {
		ep.Identity.Labels = []string{}
	}
}

func printEndpoints(w io.Writer, eps []models.Endpoint) error {
	t := newTable(w, "ID", "STATE", "IDENTITY", "POD", "CONTAINER", "INTERFACE", "IPV4", "IPV6", "LABELS")
	for _, ep := range eps {
		t.row(strconv.Itoa(int(ep.ID)), string(ep.State), identityOf(ep.Identity), dash(podOf(ep)),
			dash(attachmentOf(ep)), dash(ep.InterfaceName), dash(ep.Addressing.IPv4), dash(ep.Addressing.IPv6),
			dash(strings.Join(sortedCopy(ep.Labels), "\n")))
	}
	return t.flush()
}

func identityOf(id *models.Identity) string {
	if id == nil || id.ID == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(id.ID), 10)
}

func podOf(ep models.Endpoint) string {
	if ep.K8sPodName == "" {
		return ""
	}
	return ep.K8sNamespace + "/" + ep.K8sPodName
}

// attachmentOf is the CNI attachment with the container ID shortened the
// way container runtimes print it.
func attachmentOf(ep models.Endpoint) string {
	if ep.ContainerID == "" {
		return ""
	}
	id := ep.ContainerID
	if len(id) > 12 {
		id = id[:12]
	}
	if ep.ContainerInterfaceName != "" {
		id += ":" + ep.ContainerInterfaceName
	}
	return id
}

func sortedCopy(s []string) []string {
	return slices.Sorted(slices.Values(s))
}

func (a *app) endpointGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show everything the agent knows about one endpoint",
		Long: `get prints one endpoint in detail: attachment, interfaces, addresses, pod,
labels, identity, policy revision and the latest status messages.

` + endpointIDHelp,
		Example: `  membrane endpoint get 1234
  membrane endpoint get pod-name:default/web -o yaml
  membrane endpoint get ipv4:10.200.0.12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			ep, err := c.GetEndpoint(ctx, args[0])
			if err != nil {
				return fmt.Errorf("get endpoint %s: %w", args[0], err)
			}
			normalizeEndpoint(ep)
			return a.render(ep, func(w io.Writer) error { return printEndpoint(w, ep) })
		},
	}
}

// maxLogInGet is how many status messages `endpoint get` shows.
const maxLogInGet = 5

func printEndpoint(w io.Writer, ep *models.Endpoint) error {
	t := newTable(w)
	field := func(k, v string) {
		if v != "" {
			t.row(k+":", v)
		}
	}
	field("ID", strconv.Itoa(int(ep.ID)))
	field("State", string(ep.State))
	field("Container ID", ep.ContainerID)
	field("Container interface", ep.ContainerInterfaceName)
	host := ep.InterfaceName
	if ep.InterfaceIndex != 0 {
		host += fmt.Sprintf(" (ifindex %d)", ep.InterfaceIndex)
	}
	field("Host interface", host)
	field("MAC", ep.Mac)
	field("Host MAC", ep.HostMac)
	field("Network namespace", ep.NetworkNamespace)
	field("Netns cookie", ep.NetnsCookie)
	field("Pod", podOf(*ep))
	field("Pod UID", ep.K8sUID)
	field("IPv4", ep.Addressing.IPv4)
	field("IPv6", ep.Addressing.IPv6)
	field("Labels", dash(strings.Join(sortedCopy(ep.Labels), "\n")))
	field("Identity", identityOf(ep.Identity))
	if ep.Identity != nil && len(ep.Identity.Labels) > 0 {
		field("Identity labels", strings.Join(sortedCopy(ep.Identity.Labels), "\n"))
	}
	field("Policy revision", strconv.FormatUint(ep.PolicyRevision, 10))
	if !ep.Created.IsZero() {
		field("Created", ep.Created.Format(time.RFC3339))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(ep.Status) == 0 {
		return nil
	}
	log := sortedLog(ep.Status)
	if len(log) > maxLogInGet {
		fmt.Fprintf(w, "\nLatest status (%d of %d; all of it: membrane endpoint log %d):\n", maxLogInGet, len(log), ep.ID)
		log = log[len(log)-maxLogInGet:]
	} else {
		fmt.Fprintln(w, "\nStatus:")
	}
	return printLog(w, log)
}

func (a *app) endpointDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID...",
		Aliases: []string{"rm"},
		Short:   "Delete endpoints",
		Long: `delete asks the agent to remove endpoints: their datapath state, ipcache and
endpoint map entries go with them, and their identity is released when no
other endpoint uses it. It does not remove the veth or the IP allocation;
those belong to the CNI plugin (its DEL removes the endpoint too). It stops
at the first endpoint it cannot delete.

` + endpointIDHelp,
		Example: `  membrane endpoint delete 1234
  membrane endpoint delete container-id:4f2c9a1b7e3d`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			for _, id := range args {
				if err := c.DeleteEndpoint(ctx, id); err != nil {
					return fmt.Errorf("delete endpoint %s: %w", id, err)
				}
				if a.output == outputTable {
					fmt.Fprintf(a.stdout, "endpoint %s deleted\n", id)
				}
			}
			if a.output != outputTable {
				return a.render(map[string][]string{"deleted": args}, nil)
			}
			return nil
		},
	}
}

func (a *app) endpointLogCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "log ID",
		Short: "Show an endpoint's status log",
		Long: `log prints the endpoint's status log, oldest first: every lifecycle
transition and failure the agent recorded for it (the agent keeps the latest
messages only).

` + endpointIDHelp,
		Example: `  membrane endpoint log 1234
  membrane endpoint log pod-name:default/web -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			log, err := c.EndpointLog(ctx, args[0])
			if err != nil {
				return fmt.Errorf("endpoint %s log: %w", args[0], err)
			}
			log = sortedLog(log)
			return a.render(log, func(w io.Writer) error { return printLog(w, log) })
		},
	}
}

// sortedLog orders entries oldest first; entries with the same timestamp
// keep the agent's order.
func sortedLog(log []models.StatusEntry) []models.StatusEntry {
	out := slices.Clone(log)
	if out == nil {
		out = []models.StatusEntry{}
	}
	slices.SortStableFunc(out, func(x, y models.StatusEntry) int { return x.Timestamp.Compare(y.Timestamp) })
	return out
}

func printLog(w io.Writer, log []models.StatusEntry) error {
	t := newTable(w, "TIMESTAMP", "STATE", "CODE", "MESSAGE")
	for _, e := range log {
		t.row(e.Timestamp.Format(time.RFC3339), string(e.State), e.Code, oneLine(e.Message))
	}
	return t.flush()
}

func (a *app) endpointLabelsCommand() *cobra.Command {
	var add, del []string
	cmd := &cobra.Command{
		Use:   "labels ID [--add LABEL ...] [--delete LABEL ...]",
		Short: "Show or change an endpoint's labels",
		Long: `labels shows where an endpoint's labels come from: the ones given with the
endpoint (by the CNI plugin or an earlier labels change), the ones from its
pod's metadata, and the security labels its identity is derived from.

With --add and --delete it changes the endpoint's own labels (not the pod's:
change those with "membrane pod apply"). A new set of security labels gives
the endpoint a new identity and regenerates it. A label is
[SOURCE:]KEY[=VALUE]; without a source the agent uses "` + labels.DefaultSource + `".
Both flags repeat and take comma-separated lists.

` + endpointIDHelp,
		Example: `  membrane endpoint labels 1234
  membrane endpoint labels 1234 --add tier=gold --add app=web
  membrane endpoint labels pod-name:default/web --delete container:tier=gold`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, l := range slices.Concat(add, del) {
				if _, err := labels.Parse(l, labels.DefaultSource); err != nil {
					return fmt.Errorf("endpoint %s labels: %w", args[0], err)
				}
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			var (
				ls  *models.EndpointLabels
				err error
			)
			if len(add) == 0 && len(del) == 0 {
				ls, err = c.EndpointLabels(ctx, args[0])
			} else {
				ls, err = c.PatchEndpointLabels(ctx, args[0], &models.LabelsPatch{Add: add, Delete: del})
			}
			if err != nil {
				return fmt.Errorf("endpoint %s labels: %w", args[0], err)
			}
			normalizeLabels(ls)
			return a.render(ls, func(w io.Writer) error { return printLabels(w, ls) })
		},
	}
	cmd.Flags().StringSliceVar(&add, "add", nil, "Labels to add to the endpoint (repeatable, comma-separated)")
	cmd.Flags().StringSliceVar(&del, "delete", nil, "Labels to remove from the endpoint (repeatable, comma-separated)")
	return cmd
}

func normalizeLabels(ls *models.EndpointLabels) {
	for _, s := range []*[]string{&ls.Requested, &ls.Pod, &ls.Security} {
		if *s == nil {
			*s = []string{}
		}
	}
}

func printLabels(w io.Writer, ls *models.EndpointLabels) error {
	t := newTable(w, "ORIGIN", "LABEL")
	for _, g := range []struct {
		origin string
		labels []string
	}{{"requested", ls.Requested}, {"pod", ls.Pod}, {"security", ls.Security}} {
		if len(g.labels) == 0 {
			t.row(g.origin, "-")
		}
		for _, l := range sortedCopy(g.labels) {
			t.row(g.origin, l)
		}
	}
	return t.flush()
}
