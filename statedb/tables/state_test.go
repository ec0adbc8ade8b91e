package tables

import (
	"strings"
	"testing"
)

func TestTransitions(t *testing.T) {
	allowed := [][2]EndpointState{
		{StateWaitingForIdentity, StateWaitingToRegenerate},
		{StateWaitingToRegenerate, StateRegenerating},
		{StateRegenerating, StateReady},
		{StateReady, StateWaitingForIdentity},
		{StateReady, StateWaitingToRegenerate},
		{StateRestoring, StateWaitingToRegenerate},
		{StateWaitingForIdentity, StateInvalid},
		{StateReady, StateDisconnecting},
		{StateInvalid, StateDisconnecting},
		{StateDisconnecting, StateDisconnected},
		{StateReady, StateReady},
	}
	for _, tr := range allowed {
		if !CanTransition(tr[0], tr[1]) {
			t.Errorf("%s -> %s should be allowed", tr[0], tr[1])
		}
	}
	refused := [][2]EndpointState{
		{StateWaitingForIdentity, StateReady},
		{StateWaitingForIdentity, StateRegenerating},
		{StateWaitingToRegenerate, StateReady},
		{StateInvalid, StateReady},
		{StateDisconnected, StateDisconnecting},
		{StateDisconnecting, StateReady},
		{StateReady, StateRestoring},
	}
	for _, tr := range refused {
		if CanTransition(tr[0], tr[1]) {
			t.Errorf("%s -> %s should be refused", tr[0], tr[1])
		}
	}
}

func TestSetStateLogs(t *testing.T) {
	ep := &Endpoint{ID: 3, State: StateWaitingForIdentity}
	if err := ep.SetState(StateReady, "skip"); err == nil || !strings.Contains(err.Error(), "waiting-for-identity -> ready") {
		t.Fatalf("want refused transition naming both states, got %v", err)
	}
	if ep.State != StateWaitingForIdentity || len(ep.Log) != 0 {
		t.Fatalf("refused transition changed the endpoint: %+v", ep)
	}
	if err := ep.SetState(StateWaitingToRegenerate, "identity 256"); err != nil {
		t.Fatal(err)
	}
	if len(ep.Log) != 1 || ep.Log[0].Message != "identity 256" || ep.Log[0].State != StateWaitingToRegenerate {
		t.Fatalf("log = %+v", ep.Log)
	}
	for i := range 2 * maxLogEntries {
		ep.AddLog("ok", strings.Repeat("x", i%3))
		// Every row keeps its log: no spare capacity held with it.
		if cap(ep.Log) != len(ep.Log) {
			t.Fatalf("after %d entries the log holds room for %d", len(ep.Log), cap(ep.Log))
		}
	}
	if len(ep.Log) != maxLogEntries {
		t.Fatalf("log grew to %d entries, bound is %d", len(ep.Log), maxLogEntries)
	}
	if last := ep.Log[maxLogEntries-1].Message; last != strings.Repeat("x", (2*maxLogEntries-1)%3) {
		t.Fatalf("newest entry %q is not the last one added", last)
	}
}

func TestCloneDoesNotShareLog(t *testing.T) {
	ep := &Endpoint{ID: 1, State: StateReady}
	ep.Log = append(make([]StatusEntry, 0, 4), StatusEntry{Message: "a"}) // spare capacity an append could write into
	c := ep.Clone()
	c.AddLog("ok", "b")
	d := ep.Clone()
	d.AddLog("ok", "c")
	if c.Log[1].Message != "b" || d.Log[1].Message != "c" || len(ep.Log) != 1 {
		t.Fatalf("clones share their log: %v %v %v", ep.Log, c.Log, d.Log)
	}
}
