package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/models"
)

// errUnhealthy makes `membrane status` exit 1 when the agent answers but
// reports itself unhealthy, so scripts can use it as a health check.
var errUnhealthy = errors.New("membrane-agent reports itself unhealthy")

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's health, the health of each cell and endpoint counts by state",
		Long: `status asks the agent for its health (GET /v1/healthz): the agent's overall
verdict, the health each cell reports, and how many endpoints are in each
lifecycle state. It exits 1 when the agent is unreachable or unhealthy, so it
also serves as a health check.`,
		Example: `  membrane status
  membrane status -o json
  until membrane status >/dev/null 2>&1; do sleep 1; done   # wait for the agent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			s, err := c.Healthz(ctx)
			if err != nil {
				return fmt.Errorf("agent health: %w", err)
			}
			if err := a.render(s, func(w io.Writer) error { return printStatus(w, s) }); err != nil {
				return err
			}
			return healthError(s)
		},
	}
}

// healthError is the error status exits with: nil for a healthy agent,
// errUnhealthy with the agent's message otherwise.
func healthError(s *models.Status) error {
	switch {
	case s.Healthy:
		return nil
	case s.Message != "":
		return fmt.Errorf("%w: %s", errUnhealthy, s.Message)
	}
	return errUnhealthy
}

func printStatus(w io.Writer, s *models.Status) error {
	verdict := "healthy"
	if !s.Healthy {
		verdict = "UNHEALTHY"
	}
	t := newTable(w)
	t.row("Agent:", verdict)
	if s.Message != "" {
		t.row("Message:", oneLine(s.Message))
	}
	t.row("Version:", dash(s.Version))
	t.row("Uptime:", dash(s.Uptime))
	if k := s.Kubernetes; k != nil {
		conn := "reachable"
		if !k.Reachable {
			conn = "UNREACHABLE"
		}
		if !k.Since.IsZero() {
			conn += " since " + k.Since.Local().Format(time.DateTime)
		}
		t.row("Kubernetes:", k.Server+": "+conn)
		if k.LastError != "" {
			t.row("Last error:", k.LastErrorAt.Local().Format(time.DateTime)+" "+oneLine(k.LastError))
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if k := s.Kubernetes; k != nil && len(k.Caches) > 0 {
		fmt.Fprintln(w)
		t = newTable(w, "KUBERNETES CACHE", "SYNCED", "EVENTS", "LAST ERROR")
		for _, c := range k.Caches {
			synced := "no"
			if c.Synced {
				synced = "yes"
				if c.Detail != "" {
					synced += " (" + c.Detail + ")"
				}
			}
			last := "-"
			if c.LastError != "" {
				last = c.LastErrorAt.Local().Format(time.DateTime) + " " + oneLine(c.LastError)
			}
			t.row(c.Name, synced, strconv.FormatUint(c.Events, 10), last)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	t = newTable(w, "CELL", "HEALTH")
	for _, m := range slices.Sorted(maps.Keys(s.Modules)) {
		t.row(m, oneLine(s.Modules[m]))
	}
	if len(s.Modules) == 0 {
		t.row("(none reported)", "")
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = newTable(w, "ENDPOINT STATE", "COUNT")
	total := 0
	for _, st := range sortedStates(s.Endpoints) {
		t.row(st, strconv.Itoa(s.Endpoints[st]))
		total += s.Endpoints[st]
	}
	t.row("total", strconv.Itoa(total))
	return t.flush()
}

// lifecycleOrder lists the endpoint states in the order an endpoint goes
// through them, so counts read like a pipeline.
var lifecycleOrder = []models.EndpointState{
	models.StateRestoring,
	models.StateWaitingForIdentity,
	models.StateWaitingToRegenerate,
	models.StateRegenerating,
	models.StateReady,
	models.StateNotReady,
	models.StateDisconnecting,
	models.StateDisconnected,
	models.StateInvalid,
}

// sortedStates orders states by the lifecycle; states this CLI does not
// know come last, alphabetically.
func sortedStates(counts map[string]int) []string {
	rank := func(s string) int {
		if i := slices.Index(lifecycleOrder, models.EndpointState(s)); i >= 0 {
			return i
		}
		return len(lifecycleOrder)
	}
	out := slices.Collect(maps.Keys(counts))
	slices.SortFunc(out, func(x, y string) int {
		return cmp.Or(cmp.Compare(rank(x), rank(y)), strings.Compare(x, y))
	})
	return out
}
