package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

func (a *app) monitorCommand() *cobra.Command {
	var (
		typ      string
		endpoint uint16
		count    int
		stats    bool
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream the datapath's drops and policy verdicts as they happen",
		Long: `monitor subscribes to the agent's event stream (GET /v1/monitor) and prints
one line per event until interrupted (Ctrl-C) or until --count events:

  TIME VERDICT (REASON) DIRECTION ep ID (POD) SRC -> DST PROTOCOL identity SRC-ID [LABELS] -> DST-ID [LABELS]

A drop is reported for every dropped packet; a verdict (FORWARD) for the first
packet of every flow policy allowed (later packets of the flow, and its
replies, pass through connection tracking without events). Direction is
relative to the endpoint: ingress is traffic to it, egress traffic from it.
Identities are the ones the datapath attributed to the addresses, shown with
their labels as the agent knows them now.

The agent reads the datapath's ring buffer once and copies events to every
client. A client that does not keep up loses events rather than slowing the
agent down; the stream then says how many (LOST). -o json prints the
agent's records as they come, one JSON document per line.

--stats prints the stream's counters instead: events read, subscribers, and
events lost, by clients that fell behind and in the datapath when the ring
buffer was full (the monitor-event-lost counters of membrane bpf metrics).`,
		Example: `  membrane monitor
  membrane monitor --type drop --endpoint 1234
  membrane monitor -o json | jq 'select(.reason == "policy-denied")'
  membrane monitor --type drop --count 1   # wait for the next drop
  membrane monitor --stats`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stats {
				return a.monitorStats(cmd)
			}
			f := models.MonitorFilter{Endpoint: endpoint}
			switch typ {
			case "all":
			case models.MonitorTypeDrop, models.MonitorTypeVerdict:
				f.Type = typ
			default:
				return fmt.Errorf("invalid --type %q: want drop, verdict or all", typ)
			}
			if count < 0 {
				return fmt.Errorf("invalid --count %d: must not be negative (0 streams until interrupted)", count)
			}
			return a.monitor(cmd.Context(), f, count)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&typ, "type", "all", "Events to show: drop, verdict or all")
	fl.Uint16Var(&endpoint, "endpoint", 0, "Only events of this endpoint ID (see membrane endpoint list)")
	fl.IntVar(&count, "count", 0, "Stop after this many events (0: until interrupted)")
	fl.BoolVar(&stats, "stats", false, "Print the stream's counters (events read and lost) and exit")
	cmd.MarkFlagsMutuallyExclusive("stats", "count")
	return cmd
}

// monitorStats prints GET /v1/monitor/stats.
func (a *app) monitorStats(cmd *cobra.Command) error {
	c, ctx, cancel := a.client(cmd)
	defer cancel()
	st, err := c.MonitorStats(ctx)
	if err != nil {
		return fmt.Errorf("monitor stats: %w", err)
	}
	return a.render(st, func(w io.Writer) error {
		t := newTable(w, "RECEIVED", "INVALID", "SUBSCRIBERS", "LOST BY SUBSCRIBERS", "LOST IN DATAPATH")
		t.row(strconv.FormatUint(st.Received, 10), strconv.FormatUint(st.Invalid, 10), strconv.Itoa(st.Subscribers),
			strconv.FormatUint(st.LostBySubscribers, 10), strconv.FormatUint(st.LostInDatapath, 10))
		return t.flush()
	})
}

// errConnectTimeout ends a monitor that could not subscribe within --timeout.
var errConnectTimeout = errors.New("subscribing to the event stream timed out")

// monitor streams events to stdout; ctx ending (Ctrl-C) ends it cleanly.
func (a *app) monitor(parent context.Context, f models.MonitorFilter, count int) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)

	// --timeout bounds subscribing, not the stream.
	timer := time.AfterFunc(a.timeout, func() { cancel(fmt.Errorf("%w: %w", errConnectTimeout, context.DeadlineExceeded)) })
	stream, err := client.New(a.socket).Monitor(ctx, f)
	if !timer.Stop() && err == nil {
		stream.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		if parent.Err() != nil {
			return nil // interrupted before the first event
		}
		if cause := context.Cause(ctx); errors.Is(cause, errConnectTimeout) {
			return fmt.Errorf("monitor: %w", cause) // describe names the socket and --timeout
		}
		return fmt.Errorf("monitor: %w", err)
	}
	defer stream.Close()

	complete, err := a.printEvents(stream, count)
	switch {
	case complete, parent.Err() != nil: // --count reached, or Ctrl-C
		return nil
	case err != nil:
		return err
	}
	return errors.New("monitor: the agent ended the event stream (is it stopping?)")
}

// printEvents prints the records of an event stream. It returns complete
// once it printed count events (loss reports do not count; 0: no limit),
// otherwise when the stream ends (err nil) or fails.
func (a *app) printEvents(stream *client.MonitorStream, count int) (complete bool, err error) {
	seen := 0
	for {
		ev, err := stream.Next()
		switch {
		case errors.Is(err, io.EOF):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("monitor: %w", err)
		}
		if err := a.printEvent(stream.Record(), *ev); err != nil {
			return false, err
		}
		if ev.Type == models.MonitorTypeLost {
			continue
		}
		if seen++; count > 0 && seen >= count {
			return true, nil
		}
	}
}

// printEvent prints one record in the -o format: the agent's JSON line as
// is, a YAML document, or the one-line summary.
func (a *app) printEvent(line []byte, ev models.MonitorEvent) error {
	var err error
	switch a.output {
	case outputJSON:
		_, err = fmt.Fprintf(a.stdout, "%s\n", line)
	case outputYAML:
		var y []byte
		if y, err = yaml.JSONToYAML(line); err == nil {
			_, err = fmt.Fprintf(a.stdout, "---\n%s", y)
		}
	default:
		_, err = io.WriteString(a.stdout, formatEvent(ev)+"\n")
	}
	return err
}

// formatEvent is the one-line summary of an event, e.g.
//
//	12:00:01.123 DROP (policy-denied) ingress ep 1234 (default/web) 10.0.0.5:41234 -> 10.0.0.6:80 TCP identity 300 [k8s:app=db] -> 301 [k8s:app=web]
func formatEvent(ev models.MonitorEvent) string {
	var b strings.Builder
	b.WriteString(ev.Time.Local().Format("15:04:05.000"))
	b.WriteByte(' ')
	switch ev.Type {
	case models.MonitorTypeLost:
		fmt.Fprintf(&b, "LOST %d events (this client did not keep up; narrow it with --type or --endpoint)", ev.Lost)
		return b.String()
	case models.MonitorTypeDrop:
		b.WriteString("DROP")
	case models.MonitorTypeVerdict:
		b.WriteString("FORWARD")
	default:
		b.WriteString(strings.ToUpper(ev.Type))
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " (%s)", ev.Reason)
	}
	fmt.Fprintf(&b, " %s ep %d", ev.Direction, ev.Endpoint.ID)
	if ev.Endpoint.Pod != "" {
		fmt.Fprintf(&b, " (%s)", ev.Endpoint.Pod)
	}
	fmt.Fprintf(&b, " %s -> %s %s", hostPort(ev.Source), hostPort(ev.Destination), ev.Protocol)
	if ev.ICMPType != nil {
		fmt.Fprintf(&b, " type %d", *ev.ICMPType)
	}
	fmt.Fprintf(&b, " identity %s -> %s", identityLabels(ev.Source.Identity), identityLabels(ev.Destination.Identity))
	return b.String()
}

func hostPort(p models.MonitorPeer) string { return joinHostPort(dash(p.IP), p.Port) }

// identityLabels renders "300 [k8s:app=db,...]", or the number alone
// without labels.
func identityLabels(id models.MonitorIdentity) string {
	s := strconv.FormatUint(uint64(id.ID), 10)
	if len(id.Labels) > 0 {
		s += " [" + strings.Join(id.Labels, ",") + "]"
	}
	return s
}
