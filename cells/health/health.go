// Package health is the agent's cell.Health implementation: every module
// reports into its own scope (HiveOptions) and the Registry
// holds the latest report of each, for `membrane status` (GET /v1/healthz)
// and the hive shell's `health` command.
package health

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/hive/script"
)

// HiveOptions give each module its own health scope and job group, so
// `membrane status` reports health per cell. Every hive of Membrane cells
// uses them: the agent's and the cells' test harnesses.
func HiveOptions() hive.Options {
	opts := hive.DefaultOptions()
	opts.ModuleDecorators = cell.ModuleDecorators{
		func(h cell.Health, id cell.ModuleID) cell.Health { return h.NewScope(string(id)) },
	}
	opts.ModulePrivateProviders = cell.ModulePrivateProviders{
		func(r job.Registry, h cell.Health) job.Group { return r.NewGroup(h) },
	}
	return opts
}

// Report is one scope's latest health.
type Report struct {
	Level   cell.Level
	Message string
	Error   error
	Updated time.Time
}

func (r Report) String() string {
	s := fmt.Sprintf("%s: %s", r.Level, r.Message)
	if r.Error != nil {
		s += ": " + r.Error.Error()
	}
	return s
}

// Registry holds the reports of all scopes.
type Registry struct {
	mu      sync.Mutex
	reports map[string]Report
}

// Snapshot returns a copy of every scope's report.
func (r *Registry) Snapshot() map[string]Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.reports)
}

type scope struct {
	reg  *Registry
	name string
}

func (s *scope) set(l cell.Level, msg string, err error) {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	s.reg.reports[s.name] = Report{Level: l, Message: msg, Error: err, Updated: time.Now()}
}

func (s *scope) OK(status string)                  { s.set(cell.StatusOK, status, nil) }
func (s *scope) Stopped(reason string)             { s.set(cell.StatusStopped, reason, nil) }
func (s *scope) Degraded(reason string, err error) { s.set(cell.StatusDegraded, reason, err) }
func (s *scope) Close() {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	delete(s.reg.reports, s.name)
}

func (s *scope) NewScope(name string) cell.Health {
	if s.name != "" {
		name = s.name + "." + name
	}
	return &scope{reg: s.reg, name: name}
}

// Cell provides cell.Health, *Registry and the `health` shell command.
var Cell = cell.Provide(
	func() (cell.Health, *Registry) {
		r := &Registry{reports: map[string]Report{}}
		return &scope{reg: r}, r
	},
	func(r *Registry) hive.ScriptCmdOut { return hive.NewScriptCmd("health", healthCmd(r)) },
)

func healthCmd(r *Registry) script.Cmd {
	return script.Command(
		script.CmdUsage{Summary: "Show health, or wait until a line matches the pattern", Args: "(pattern)"},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			var re *regexp.Regexp
			if len(args) == 1 {
				var err error
				if re, err = regexp.Compile(args[0]); err != nil {
					return nil, err
				}
			}
			for s.Context().Err() == nil {
				snap := r.Snapshot()
				for _, name := range slices.Sorted(maps.Keys(snap)) {
					line := fmt.Sprintf("%s: level=%s message=%s", name, snap[name].Level, snap[name].Message)
					if re == nil {
						fmt.Fprintln(s.LogWriter(), line)
					} else if re.MatchString(line) {
						s.Logf("matched: %s\n", line)
						return nil, nil
					}
				}
				if re == nil {
					return nil, nil
				}
				time.Sleep(20 * time.Millisecond)
			}
			return nil, s.Context().Err()
		})
}
