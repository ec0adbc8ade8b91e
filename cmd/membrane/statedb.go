package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/client"
)

func (a *app) statedbCommand() *cobra.Command {
	var columns []string
	cmd := &cobra.Command{
		Use:   "statedb [TABLE]",
		Short: "Dump the rows of one of the agent's statedb tables",
		Long: `statedb prints the rows of a statedb table as the agent holds them right now
(GET /statedb/dump/TABLE): the shared state the agent's cells read and write,
e.g. endpoints, identities, pods, ipam, ipcache, bpf-endpoints. Without TABLE
it lists the tables and how many rows each holds.

The table's columns are the keys of the rows' JSON, in order; lists print one
item per line, nested objects as compact JSON, a reconciler status as its
kind (and error). --columns picks and orders columns. -o json prints the rows
exactly as the agent sent them, -o yaml the same as YAML.

"membrane shell" opens the agent's live statedb shell instead: queries by
index (db/get, db/prefix, db/list) and db/watch, which prints the rows as
they change.`,
		Example: `  membrane statedb
  membrane statedb endpoints --columns id,state,identity,ipv4
  membrane statedb ipcache -o json

  # Follow a table as it changes: the live shell.
  membrane shell -- db/watch endpoints`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: a.completeTable,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			if len(args) == 0 {
				raw, err := c.StateDBDump(ctx, "")
				if err != nil {
					return fmt.Errorf("statedb: %w", err)
				}
				return a.printTableList(raw)
			}
			name := args[0]
			raw, err := c.StateDBDump(ctx, name)
			if err != nil {
				return fmt.Errorf("statedb table %s: %w", name, err)
			}
			var dump map[string]json.RawMessage
			if err := json.Unmarshal(raw, &dump); err != nil {
				return fmt.Errorf("statedb table %s: unexpected answer from the agent: %w", name, err)
			}
			rows, ok := dump[name]
			if !ok {
				return fmt.Errorf("the agent has no statedb table %q%s", name, a.knownTables(cmd))
			}
			return a.printRows(name, rows, columns)
		},
	}
	cmd.Flags().StringSliceVarP(&columns, "columns", "c", nil, "Columns (JSON keys of the rows) to show, in order (table output)")
	return cmd
}

// knownTables lists the agent's tables for an error message, or says
// nothing if it cannot.
func (a *app) knownTables(cmd *cobra.Command) string {
	names := a.tableNames(cmd.Context())
	if len(names) == 0 {
		return ""
	}
	return " (its tables: " + strings.Join(names, ", ") + ")"
}

// tableNames asks the agent for its tables' names (none if it cannot).
func (a *app) tableNames(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	raw, err := client.New(a.socket).StateDBDump(ctx, "")
	if err != nil {
		return nil
	}
	var dump map[string]json.RawMessage
	if json.Unmarshal(raw, &dump) != nil {
		return nil
	}
	return slices.Sorted(maps.Keys(dump))
}

// completeTable completes a table name from the running agent's (Tab
// after "membrane statedb"); without an agent it offers nothing.
func (a *app) completeTable(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	a.timeout = 2 * time.Second // a Tab does not wait for long
	return a.tableNames(context.Background()), cobra.ShellCompDirectiveNoFileComp
}

type tableInfo struct {
	Name string `json:"name"`
	Rows int    `json:"rows"`
}

func (a *app) printTableList(raw []byte) error {
	var dump map[string][]json.RawMessage
	if err := json.Unmarshal(raw, &dump); err != nil {
		return fmt.Errorf("statedb: unexpected answer from the agent: %w", err)
	}
	infos := []tableInfo{}
	for _, name := range slices.Sorted(maps.Keys(dump)) {
		infos = append(infos, tableInfo{name, len(dump[name])})
	}
	return a.render(infos, func(w io.Writer) error {
		t := newTable(w, "TABLE", "ROWS")
		for _, ti := range infos {
			t.row(ti.Name, strconv.Itoa(ti.Rows))
		}
		return t.flush()
	})
}

func (a *app) printRows(name string, rows json.RawMessage, columns []string) error {
	switch a.output {
	case outputJSON:
		var buf bytes.Buffer
		if err := json.Indent(&buf, rows, "", "  "); err != nil {
			return fmt.Errorf("statedb table %s: %w", name, err)
		}
		buf.WriteByte('\n')
		_, err := a.stdout.Write(buf.Bytes())
		return err
	case outputYAML:
		y, err := yaml.JSONToYAML(rows)
		if err != nil {
			return fmt.Errorf("statedb table %s: encoding YAML: %w", name, err)
		}
		_, err = a.stdout.Write(y)
		return err
	}

	var objs []json.RawMessage
	if err := json.Unmarshal(rows, &objs); err != nil {
		return fmt.Errorf("statedb table %s: rows are not a JSON array: %w", name, err)
	}
	if len(objs) == 0 {
		fmt.Fprintf(a.stderr, "statedb table %s has no rows\n", name)
		return nil
	}
	var (
		keys   []string
		parsed = make([]map[string]json.RawMessage, len(objs))
	)
	for i, o := range objs {
		fields, err := objectFields(o)
		if err != nil {
			return fmt.Errorf("statedb table %s, row %d: %w", name, i+1, err)
		}
		parsed[i] = map[string]json.RawMessage{}
		// A key first seen in a later row (an omitempty field) goes
		// right after the key that precedes it there, so the columns
		// keep the row type's field order.
		prev := -1
		for _, f := range fields {
			if at := slices.Index(keys, f.key); at >= 0 {
				prev = at
			} else {
				prev++
				keys = slices.Insert(keys, prev, f.key)
			}
			parsed[i][f.key] = f.value
		}
	}
	if len(columns) > 0 {
		for _, c := range columns {
			if !slices.Contains(keys, c) {
				return fmt.Errorf("statedb table %s has no column %q (its columns: %s)", name, c, strings.Join(keys, ", "))
			}
		}
		keys = columns
	}

	header := make([]string, len(keys))
	for i, k := range keys {
		header[i] = strings.ToUpper(k)
	}
	t := newTable(a.stdout, header...)
	for _, row := range parsed {
		cells := make([]string, len(keys))
		for i, k := range keys {
			cells[i] = cellText(row[k])
		}
		t.row(cells...)
	}
	return t.flush()
}

type jsonField struct {
	key   string
	value json.RawMessage
}

// objectFields returns the fields of a JSON object in the order they appear.
func objectFields(raw json.RawMessage) ([]jsonField, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON row: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		// A row that is not an object is one column named "value".
		return []jsonField{{"value", raw}}, nil
	}
	var fields []jsonField
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON row: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("invalid JSON row: object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("invalid JSON row: field %q: %w", key, err)
		}
		fields = append(fields, jsonField{key, v})
	}
	return fields, nil
}

// cellText renders one JSON value in a table cell.
func cellText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return oneLine(s)
		}
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			break
		}
		objects := 0
		lines := make([]string, 0, len(items))
		for _, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) > 0 && it[0] == '{' {
				if l, ok := labelText(it); ok {
					lines = append(lines, l)
					continue
				}
				objects++
			}
			lines = append(lines, cellText(it))
		}
		if objects > 0 {
			// Lists of structured entries (an endpoint's status log) do
			// not fit in a cell: -o json shows them.
			if len(items) == 1 {
				return "(1 entry)"
			}
			return fmt.Sprintf("(%d entries)", len(items))
		}
		return strings.Join(lines, "\n")
	case '{':
		if l, ok := labelText(raw); ok {
			return l
		}
		if s, ok := reconcilerStatusText(raw); ok {
			return s
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

// labelText renders a label object {"source", "key", "value"} (the labels
// package's JSON form) as source:key=value.
func labelText(raw json.RawMessage) (string, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return "", false
	}
	var l struct{ Source, Key, Value string }
	if _, ok := m["key"]; !ok || len(m) > 3 || json.Unmarshal(raw, &l) != nil || l.Source == "" {
		return "", false
	}
	for k := range m {
		if k != "source" && k != "key" && k != "value" {
			return "", false
		}
	}
	s := l.Source + ":" + l.Key
	if l.Value != "" {
		s += "=" + l.Value
	}
	return s, true
}

// reconcilerStatusText renders a statedb reconciler status ({"kind",
// "updated-at", "error"}) as "Done", "Pending" or "Error: why".
func reconcilerStatusText(raw json.RawMessage) (string, bool) {
	var st struct {
		Kind      *string `json:"kind"`
		UpdatedAt *string `json:"updated-at"`
		Error     *string `json:"error"`
	}
	if json.Unmarshal(raw, &st) != nil || st.Kind == nil || st.UpdatedAt == nil {
		return "", false
	}
	if st.Error != nil && *st.Error != "" {
		return *st.Kind + ": " + oneLine(*st.Error), true
	}
	return *st.Kind, true
}
