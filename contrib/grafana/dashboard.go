// Package grafana ships the agent's Grafana dashboard (membrane.json,
// importable as is: Dashboards > New > Import, then pick the Prometheus
// data source that scrapes --prometheus-serve-addr) and lets tests read
// the metrics it charts: cells/metrics checks each is one the agent
// defines and docs/metrics.md describes, the e2e suite that each is in a
// live scrape.
package grafana

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
)

// Dashboard is membrane.json.
//
//go:embed membrane.json
var Dashboard []byte

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// metricName matches the names of the agent's series in PromQL: its own
// (membrane_), the Go runtime's (go_) and the process's (process_).
var metricName = regexp.MustCompile(`\b(?:membrane|go|process)_[a-zA-Z0-9_]+`)

// Metrics returns the series names the dashboard's expressions use
// (histograms by their _bucket/_count/_sum series), sorted, and an error
// if the dashboard does not parse or a panel has no expression.
func Metrics() ([]string, error) {
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(Dashboard, &d); err != nil {
		return nil, fmt.Errorf("membrane.json: %w", err)
	}
	var names []string
	var walk func([]panel) error
	walk = func(ps []panel) error {
		for _, p := range ps {
			if err := walk(p.Panels); err != nil {
				return err
			}
			if p.Targets == nil {
				continue // a row
			}
			for _, t := range p.Targets {
				found := metricName.FindAllString(t.Expr, -1)
				if len(found) == 0 {
					return fmt.Errorf("membrane.json: panel %q: expression %q names no metric", p.Title, t.Expr)
				}
				names = append(names, found...)
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
