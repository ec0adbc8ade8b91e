package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/infrastructure"
)

// The cell graph in Graphviz dot (`membrane-agent hive --dot`, rendered
// into docs/architecture.md by `make docs`): a box per cell (hive
// module), a cylinder per statedb table. Arrows follow the data: a cell
// that takes a table's RWTable writes it (cell -> table), one that takes
// its Table reads it (table -> cell), and a cell that takes anything else
// another cell provides (an interface, its config, API routes) gets an
// arrow from that cell, dashed. The infrastructure every cell has (the
// database, jobs, health, the table registrations, the state directory)
// is left out: it would connect to everything.
//
// hive prints its cells (PrintObjects) but does not expose them as data,
// so the graph is read from that text: modules ("Ⓜ️ id (description):"),
// their constructors and invokes, each with "⇨ inputs" and "⇦ outputs";
// configs ("⚙️ (Type) {...}") count as outputs.

type graphCell struct {
	id, desc string
	parent   string // enclosing module, "" at the top
	ins      []string
	outs     []string
}

// printCellGraph writes the graph of h's cells in dot.
func printCellGraph(h *hive.Hive, w io.Writer) error {
	all, err := readCells(h)
	if err != nil {
		return err
	}
	// The infrastructure alone: its modules, and its database for the
	// names of the tables.
	var db *statedb.DB
	base, err := readCells(infrastructure.New(cell.Invoke(func(d *statedb.DB) { db = d })))
	if err != nil {
		return err
	}
	infra := map[string]bool{}
	for _, c := range base {
		infra[c.id] = true
	}
	names := map[string]string{}
	for _, t := range db.GetTables(db.ReadTxn()) {
		// The row type is only in the table's Go type: *genTable[*pkg.Row].
		if m := rowType.FindStringSubmatch(reflect.TypeOf(t).String()); m != nil {
			names[m[1]] = t.Name()
		}
	}
	return writeDot(w, all, infra, names)
}

// readCells reads the modules of a hive from its PrintObjects text, in
// the order the hive constructs them.
func readCells(h *hive.Hive) ([]*graphCell, error) {
	var buf bytes.Buffer
	if err := h.PrintObjects(&buf, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return nil, err
	}
	type frame struct {
		indent int
		cell   *graphCell
	}
	var (
		cellsOut   []*graphCell
		stack      []frame
		leaf       *[]string // the inputs or outputs being read
		leafIndent int
		configEnd  = -1 // indent of the closing "}" of a config dump
	)
	owner := func(indent int) *graphCell {
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			return nil
		}
		return stack[len(stack)-1].cell
	}
	var pending strings.Builder
	flush := func() {
		if leaf != nil {
			*leaf = append(*leaf, splitTypes(pending.String())...)
		}
		leaf = nil
		pending.Reset()
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Start hooks:") {
			break
		}
		text := strings.TrimLeft(line, " ")
		indent := len(line) - len(text)
		text = strings.TrimSpace(text)
		if configEnd >= 0 {
			if text == "}" && indent == configEnd {
				configEnd = -1
			}
			continue
		}
		if text == "" || line == "Cells:" {
			continue
		}
		if leaf != nil && indent > leafIndent && !strings.HasPrefix(text, "⇨") && !strings.HasPrefix(text, "⇦") {
			pending.WriteString(" " + text)
			continue
		}
		flush()
		switch {
		case strings.HasPrefix(text, "Ⓜ️ "):
			id, desc, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(text, "Ⓜ️ "), ":"), " ")
			c := &graphCell{id: id, desc: strings.TrimSuffix(strings.TrimPrefix(desc, "("), ")")}
			if p := owner(indent); p != nil {
				c.parent = p.id
			}
			stack = append(stack, frame{indent, c})
			cellsOut = append(cellsOut, c)
		case strings.HasPrefix(text, "⚙️ "):
			if c := owner(indent); c != nil {
				if m := configType.FindStringSubmatch(text); m != nil {
					c.outs = append(c.outs, m[1])
				}
			}
			if strings.HasSuffix(text, "{") {
				configEnd = indent
			}
		case strings.HasPrefix(text, "⇨"), strings.HasPrefix(text, "⇦"):
			c := owner(indent - 4) // the leaf is under its constructor
			if c == nil {
				continue
			}
			leaf, leafIndent = &c.outs, indent
			if strings.HasPrefix(text, "⇨") {
				leaf = &c.ins
			}
			pending.WriteString(strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(text, "⇨"), "⇦"), " "))
		}
	}
	flush()
	return cellsOut, sc.Err()
}

var (
	configType = regexp.MustCompile(`^⚙️ \(([^)]+)\)`)
	tableType  = regexp.MustCompile(`^statedb\.(RW)?Table\[\*[^\]]*\.([A-Za-z0-9_]+)\]$`)
	rowType    = regexp.MustCompile(`\[\*[^\]]*\.([A-Za-z0-9_]+)\]$`)
)

// splitTypes splits "A, B[group = "x"], C[optional]" into the types, with
// "[optional]" and a group's "[]" dropped: a group's consumers and
// providers then name the same type.
func splitTypes(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ", ") {
		t = strings.TrimSpace(t)
		t = strings.TrimSuffix(t, "[optional]")
		if strings.Contains(t, "[group = ") {
			t = strings.TrimPrefix(t, "[]")
		}
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

// writeDot writes the graph of cells, leaving out the modules named in
// infra (and what only they provide); tables are named by names (row
// type -> table name).
func writeDot(w io.Writer, all []*graphCell, infra map[string]bool, names map[string]string) error {
	var shown []*graphCell
	providers := map[string][]string{} // type -> cells providing it
	for _, c := range all {
		if infra[c.id] {
			continue
		}
		shown = append(shown, c)
		for _, t := range c.outs {
			if !slices.Contains(providers[t], c.id) {
				providers[t] = append(providers[t], c.id)
			}
		}
	}
	children := map[string][]*graphCell{}
	for _, c := range shown {
		if c.parent != "" && !infra[c.parent] {
			children[c.parent] = append(children[c.parent], c)
		}
	}

	edges := map[string]bool{}
	var tables []string
	table := func(row string) string {
		name := row
		if n, ok := names[row]; ok {
			name = n
		}
		if !slices.Contains(tables, name) {
			tables = append(tables, name)
		}
		return "table " + name
	}
	for _, c := range shown {
		for _, in := range c.ins {
			if m := tableType.FindStringSubmatch(in); m != nil {
				if m[1] == "RW" {
					edges[fmt.Sprintf("%q -> %q", c.id, table(m[2]))] = true
				} else {
					edges[fmt.Sprintf("%q -> %q", table(m[2]), c.id)] = true
				}
				continue
			}
			for _, p := range providers[in] {
				if p != c.id && p != c.parent && c.id != parentOf(all, p) {
					edges[fmt.Sprintf("%q -> %q [style=dashed]", p, c.id)] = true
				}
			}
		}
	}

	var b strings.Builder
	b.WriteString(`// The cells of the default membrane-agent and the statedb tables between
// them. Generated by "membrane-agent hive --dot" (make docs); do not edit.
digraph membrane_agent {
  rankdir=LR;
  node [fontname="Helvetica", fontsize=11];
  edge [color="#555555"];
  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe"];
`)
	var node func(c *graphCell, indent string)
	node = func(c *graphCell, indent string) {
		if kids := children[c.id]; len(kids) > 0 {
			fmt.Fprintf(&b, "%ssubgraph %q {\n%s  label=%q; style=rounded; color=\"#999999\";\n", indent, "cluster_"+c.id, indent, c.id)
			fmt.Fprintf(&b, "%s  %q [label=%q];\n", indent, c.id, c.id+"\n"+wrap(c.desc, 32))
			for _, k := range kids {
				node(k, indent+"  ")
			}
			fmt.Fprintf(&b, "%s}\n", indent)
			return
		}
		fmt.Fprintf(&b, "%s%q [label=%q];\n", indent, c.id, c.id+"\n"+wrap(c.desc, 32))
	}
	for _, c := range shown {
		if c.parent == "" || infra[c.parent] {
			node(c, "  ")
		}
	}
	b.WriteString("  node [shape=cylinder, style=filled, fillcolor=\"#fef7e0\"];\n")
	slices.Sort(tables)
	for _, t := range tables {
		fmt.Fprintf(&b, "  %q [label=%q];\n", "table "+t, t)
	}
	sorted := make([]string, 0, len(edges))
	for e := range edges {
		sorted = append(sorted, e)
	}
	slices.Sort(sorted)
	for _, e := range sorted {
		fmt.Fprintf(&b, "  %s;\n", e)
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func parentOf(all []*graphCell, id string) string {
	for _, c := range all {
		if c.id == id {
			return c.parent
		}
	}
	return ""
}

// wrap breaks s into lines of about n characters for a node's label.
func wrap(s string, n int) string {
	var lines []string
	var cur string
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > n {
			lines = append(lines, cur)
			cur = w
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return strings.Join(lines, "\n")
}
