package main

import (
	"log/slog"
	"testing"

	"github.com/cilium/hive"

	"github.com/membrane-net/membrane/cells/statedir"
)

// TestHivePopulates builds the agent's object graph without starting it:
// compiling proves the cells exist, this proves each finds what it needs
// (a cell whose dependency was left out fails here, not at startup).
func TestHivePopulates(t *testing.T) {
	h := newHive()
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = t.TempDir() })
	if err := h.Populate(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}
