// Package importrules holds the test that keeps the layout's import rules
// true (docs/architecture.md, "Import rules"): cells never import cells,
// clients never import cells, the schema and the API contract point one
// way, the Kubernetes types stay a library, and the clients stay lean
// (no Kubernetes libraries in either, nothing heavy in the CNI plugin).
package importrules
