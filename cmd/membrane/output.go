package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// render prints v as JSON or YAML when -o asks for it, else calls table.
// JSON and YAML carry the API's kebab-case keys (YAML is derived from the
// JSON encoding).
func (a *app) render(v any, table func(w io.Writer) error) error {
	switch a.output {
	case outputJSON:
		return writeJSON(a.stdout, v)
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML: %w", err)
		}
		_, err = a.stdout.Write(b)
		return err
	}
	return table(a.stdout)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	return nil
}

// table writes aligned columns. A cell holding several lines spreads over
// continuation rows whose other cells are empty, so a list (an endpoint's
// labels) stays readable without making the column wide.
type table struct {
	out io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(out io.Writer, header ...string) *table {
	t := &table{out: out}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 8, 3, ' ', 0)
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	lines := make([][]string, len(cells))
	n := 1
	for i, c := range cells {
		lines[i] = strings.Split(strings.ReplaceAll(c, "\t", " "), "\n")
		n = max(n, len(lines[i]))
	}
	for l := range n {
		row := make([]string, len(cells))
		for i := range cells {
			if l < len(lines[i]) {
				row[i] = lines[i][l]
			}
		}
		fmt.Fprintln(t.tw, strings.Join(row, "\t"))
	}
}

// flush writes the table, without trailing blanks on any line.
func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for l := range strings.Lines(t.buf.String()) {
		out.WriteString(strings.TrimRight(l, " \n"))
		out.WriteByte('\n')
	}
	_, err := io.WriteString(t.out, out.String())
	return err
}

// dash stands in for an empty value in a table cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
