// Package benchchart is the format in which BenchmarkDatapath
// (test/bench) writes its results, and the SVG chart made of them
// (docs/benchmarks-datapath.svg, docs/benchmarks.md). It is standard
// library only and linked into no product binary: the benchmark writes a
// Datapath as JSON (MEMBRANE_BENCH_OUT), scripts/benchchart reads it and
// calls SVG. Regenerate both with
//
//	make bench-chart
package benchchart

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Datapath is one run of BenchmarkDatapath.
type Datapath struct {
	Benchmark string  `json:"benchmark"` // "datapath"
	Date      string  `json:"date"`      // RFC 3339, when the run ended
	Machine   Machine `json:"machine"`
	// Runs is the number of alternated rounds; every mode is measured once
	// per round, Seconds seconds per tool.
	Runs    int `json:"runs"`
	Seconds int `json:"seconds"`
	// PinnedCPU is the CPU both sockperf ends are pinned to.
	PinnedCPU string `json:"pinnedCPU"`
	// Policy says what the membrane modes were measured with (an L4 allow
	// policy, and whether it was verified to be enforced).
	Policy string `json:"policy"`
	Modes  []Mode `json:"modes"`
}

// Machine is where the numbers were measured.
type Machine struct {
	Kernel   string `json:"kernel"` // uname -r
	CPUs     int    `json:"cpus"`   // nproc
	CPUModel string `json:"cpuModel"`
	OS       string `json:"os"`
}

// Mode is one way of connecting the client to the server.
type Mode struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Skipped is why the mode was not measured ("" when it was).
	Skipped string `json:"skipped,omitempty"`
	// One value per round.
	Gbps     []float64 `json:"gbps,omitempty"`
	TPS      []float64 `json:"tps,omitempty"`
	RTTP50us []float64 `json:"rttP50us,omitempty"`
	// Medians over the rounds.
	MedianGbps     float64 `json:"medianGbps,omitempty"`
	MedianTPS      float64 `json:"medianTps,omitempty"`
	MedianRTTP50us float64 `json:"medianRttP50us,omitempty"`
	// Programs is what a mode's eBPF programs cost (Membrane's modes).
	Programs *Programs `json:"programs,omitempty"`
}

// Programs is the cost of a mode's eBPF programs, from the kernel's run
// time statistics during more request/response rounds after the measured
// ones (the statistics cost a little on every run, so not during them).
type Programs struct {
	// NsPerRun is the median over the rounds of the mean time of one
	// program run.
	NsPerRun       float64   `json:"nsPerRun"`
	NsPerRunRounds []float64 `json:"nsPerRunRounds,omitempty"`
	// RunsPerTrans is the program runs per request/response transaction
	// (median)
	// (a little high: sockperf's warm-up messages are not transactions).
	RunsPerTrans float64 `json:"runsPerTrans"`
}

// UsPerTrans is the programs' time per transaction, in µs.
func (p Programs) UsPerTrans() float64 { return p.NsPerRun * p.RunsPerTrans / 1000 }

// Measured reports whether the mode has numbers.
func (m Mode) Measured() bool { return m.Skipped == "" && m.MedianGbps > 0 }

// Mode returns the mode called name, if any.
func (d *Datapath) Mode(name string) (Mode, bool) {
	for _, m := range d.Modes {
		if m.Name == name {
			return m, true
		}
	}
	return Mode{}, false
}

// Read decodes a Datapath and checks that it can be charted.
func Read(r io.Reader) (*Datapath, error) {
	var d Datapath
	dec := json.NewDecoder(r)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("decoding datapath benchmark results: %w", err)
	}
	if d.Benchmark != "datapath" {
		return nil, fmt.Errorf("benchmark is %q, not \"datapath\": pass the file BenchmarkDatapath wrote (MEMBRANE_BENCH_OUT)", d.Benchmark)
	}
	if len(d.Modes) == 0 {
		return nil, fmt.Errorf("no modes in the results: the benchmark measured nothing")
	}
	return &d, nil
}

// ReadFile is Read of a file.
func ReadFile(path string) (*Datapath, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// WriteFile writes d as indented JSON.
func (d *Datapath) WriteFile(path string) error {
	raw, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

// MachineOf reads the machine's description from /proc and /etc; what it
// cannot read is left empty.
func MachineOf(cpus int) Machine {
	m := Machine{CPUs: cpus}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m.OS = strings.TrimSpace(m.OS + " " + strings.TrimSpace(string(b))) // point release
	}
	return m
}
