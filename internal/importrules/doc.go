// Package importrules holds the test that keeps the layout's import rules
// true (docs/architecture.md, "Import rules"): cells never import cells,
// clients never import cells, the schema and the API contract point one
// way, and the CNI plugin stays lean.
package importrules
