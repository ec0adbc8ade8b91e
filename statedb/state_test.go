package tables

import (
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

func TestTransitions(t *testing.T) {
	allowed := [][2]models.EndpointState{
		{models.StateWaitingForIdentity, models.StateWaitingToRegenerate},
		{models.StateWaitingToRegenerate, models.StateRegenerating},
		{models.StateRegenerating, models.StateReady},
		{models.StateReady, models.StateWaitingForIdentity},
		{models.StateReady, models.StateWaitingToRegenerate},
		{models.StateRestoring, models.StateWaitingToRegenerate},
		{models.StateWaitingForIdentity, models.StateInvalid},
		{models.StateReady, models.StateDisconnecting},
		{models.StateInvalid, models.StateDisconnecting},
		{models.StateDisconnecting, models.StateDisconnected},
		{models.StateReady, models.StateReady},
	}
	for _, tr := range allowed {
		if !CanTransition(tr[0], tr[1]) {
			t.Errorf("%s -> %s should be allowed", tr[0], tr[1])
		}
	}
	refused := [][2]models.EndpointState{
		{models.StateWaitingForIdentity, models.StateReady},
		{models.StateWaitingForIdentity, models.StateRegenerating},
		{models.StateWaitingToRegenerate, models.StateReady},
		{models.StateInvalid, models.StateReady},
		{models.StateDisconnected, models.StateDisconnecting},
		{models.StateDisconnecting, models.StateReady},
		{models.StateReady, models.StateRestoring},
	}
	for _, tr := range refused {
		if CanTransition(tr[0], tr[1]) {
			t.Errorf("%s -> %s should be refused", tr[0], tr[1])
		}
	}
}

func TestSetStateLogs(t *testing.T) {
	ep := &Endpoint{ID: 3, State: models.StateWaitingForIdentity}
	if err := ep.SetState(models.StateReady, "skip"); err == nil || !strings.Contains(err.Error(), "waiting-for-identity -> ready") {
		t.Fatalf("want refused transition naming both states, got %v", err)
	}
	if ep.State != models.StateWaitingForIdentity || len(ep.Log) != 0 {
		t.Fatalf("refused transition changed the endpoint: %+v", ep)
	}
	if err := ep.SetState(models.StateWaitingToRegenerate, "identity 256"); err != nil {
		t.Fatal(err)
	}
	if len(ep.Log) != 1 || ep.Log[0].Message != "identity 256" || ep.Log[0].State != models.StateWaitingToRegenerate {
		t.Fatalf("log = %+v", ep.Log)
	}
	for i := range 2 * maxLogEntries {
		ep.AddLog("ok", strings.Repeat("x", i%3))
	}
	if len(ep.Log) != maxLogEntries {
		t.Fatalf("log grew to %d entries, bound is %d", len(ep.Log), maxLogEntries)
	}
}

func TestCloneDoesNotShareLog(t *testing.T) {
	ep := &Endpoint{ID: 1, State: models.StateReady}
	ep.Log = append(make([]models.StatusEntry, 0, 4), models.StatusEntry{Message: "a"}) // spare capacity an append could write into
	c := ep.Clone()
	c.AddLog("ok", "b")
	d := ep.Clone()
	d.AddLog("ok", "c")
	if c.Log[1].Message != "b" || d.Log[1].Message != "c" || len(ep.Log) != 1 {
		t.Fatalf("clones share their log: %v %v %v", ep.Log, c.Log, d.Log)
	}
}
