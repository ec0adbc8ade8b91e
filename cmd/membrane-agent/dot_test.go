package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/cells/status"
)

// The picture in docs/architecture.md is the default agent's: the
// committed docs/cell-graph.dot is what `membrane-agent hive --dot`
// prints (make docs regenerates it and its SVG).
func TestCellGraphIsCurrent(t *testing.T) {
	var got bytes.Buffer
	if err := printCellGraph(newAgentHive(&status.Flags{}), &got); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../docs/cell-graph.dot")
	if err != nil {
		t.Fatalf("%v: run make docs", err)
	}
	if got.String() != string(want) {
		t.Fatalf("docs/cell-graph.dot is stale: run make docs and commit docs/cell-graph.dot and docs/cell-graph.svg; membrane-agent hive --dot prints:\n%s", got.String())
	}
}

// The graph has every cell of the default agent, its tables, and the
// arrows of a few known dependencies.
func TestCellGraph(t *testing.T) {
	var b bytes.Buffer
	if err := printCellGraph(newAgentHive(&status.Flags{}), &b); err != nil {
		t.Fatal(err)
	}
	g := b.String()
	for _, want := range []string{
		`"endpoint-manager" -> "table endpoints";`,       // writes (RWTable)
		`"table endpoints" -> "identity";`,               // reads (Table)
		`"endpoint-api" -> "api-server" [style=dashed];`, // its routes
		`"endpoint-manager" -> "endpoint-api" [style=dashed];`,
		`subgraph "cluster_loader"`,
		`"shell" [label=`,
	} {
		if !strings.Contains(g, want) {
			t.Errorf("no %s in:\n%s", want, g)
		}
	}
	for _, infra := range []string{`"statedb"`, `"jobs"`, `"tables"`, `"state-dir"`} {
		if strings.Contains(g, infra+" [") {
			t.Errorf("infrastructure module %s is drawn", infra)
		}
	}
}
