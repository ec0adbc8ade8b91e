// Command benchchart draws docs/benchmarks-datapath.svg from the results
// BenchmarkDatapath writes (MEMBRANE_BENCH_OUT): throughput and the p50
// request/response round trip per mode, one bar each, values labelled.
// It is a build tool, not shipped:
//
//	go run ./scripts/benchchart -in docs/benchmarks-datapath.json -out docs/benchmarks-datapath.svg
//
// or `make bench-chart`, which runs the benchmark first.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/membrane-net/membrane/internal/benchchart"
)

func main() {
	in := flag.String("in", "docs/benchmarks-datapath.json", "results of BenchmarkDatapath (JSON, as MEMBRANE_BENCH_OUT wrote it)")
	out := flag.String("out", "docs/benchmarks-datapath.svg", "SVG file to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	d, err := benchchart.ReadFile(in)
	if err != nil {
		return fmt.Errorf("%w (run `make bench-chart`, or BenchmarkDatapath with MEMBRANE_BENCH_OUT=%s)", err, in)
	}
	var buf bytes.Buffer
	if err := benchchart.SVG(&buf, d); err != nil {
		return err
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d modes)\n", out, len(d.Modes))
	return nil
}
