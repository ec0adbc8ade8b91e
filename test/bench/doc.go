// Package bench holds Membrane's benchmarks against the reference CNI
// plugins (Debian's containernetworking-plugins: ptp + host-local),
// measured side by side in the same run:
//
//   - BenchmarkCNIAddDel: `cnitool add` / `cnitool del` latency (p50/p99)
//     of membrane-cni (a real membrane-agent running) and of ptp, the two
//     plugins alternated pod by pod, plus the makespan of 100 parallel ADDs
//     and DELs.
//   - BenchmarkDatapath: TCP throughput (iperf3, one stream) and
//     request/response latency (sockperf ping-pong, both ends pinned to one
//     CPU) between a client and a server in each mode: ptp, the limits (one
//     veth pair without programs; loopback), membrane with an L4 allow
//     policy, and membrane's optional modes (host routing, netkit; skipped
//     with a printed reason when the agent lacks the flag). Rotating order,
//     medians, ratios to ptp and to veth; the results as JSON for the chart
//     of docs/benchmarks.md (MEMBRANE_BENCH_OUT, make bench-chart).
//   - BenchmarkPolicyScale: the policy engine in process: one endpoint's
//     regeneration with 10,000 identities and 1,000 rules and its policy
//     map size, and the time from PUT /v1/policy to 200 endpoints enforcing
//     it.
//   - BenchmarkDatapathPolicyScale: the same pod-to-pod TCP on membrane
//     (Kubernetes mode, 10,000 CiliumIdentity objects) with 1 rule and
//     with 1,000 rules selecting the server, alternated, medians, ratio.
//   - BenchmarkCNIAddKubernetes: `cnitool add` p50/p99 in Kubernetes mode
//     (a real kube-apiserver) for pods whose identity exists and pods that
//     need a new one, against the same pods on a local-mode agent and
//     against ptp, alternated; then the API server writes the agent makes
//     per pod lifecycle and the watch events it receives per pod start.
//   - BenchmarkBinaries: the size of membrane-cni, the CLI and the agent,
//     and the start time of membrane-cni (CNI VERSION) against ptp,
//     alternated, and of `membrane --help`: the clients link no
//     Kubernetes library, and this shows what a start costs.
//   - BenchmarkMetricsScrape: an agent with 1,000 endpoints (made through
//     the API without veths): the duration of a scrape of /metrics, the
//     agent CPU a scrape takes, and the agent's resident memory with
//     --prometheus-serve-addr and without it (docs/metrics.md).
//   - BenchmarkControlPlane: one agent at 0, 100 and 1,000 endpoints (made
//     through the API without veths): live heap and RSS per endpoint,
//     endpoint creations with new and known identities (rate, agent CPU),
//     PUT /v1/policy until every endpoint's key is in the pinned policy
//     map, and kill -9 until the agent serves and every endpoint is ready
//     again, against the goals (docs/benchmarks-controlplane.md).
//
// Benchmarks report numbers (b.ReportMetric, and a table printed on
// standard output before each benchmark's result line); they assert no
// timing. They need root (network namespaces, veths, BPF) and skip without
// it (fail under MEMBRANE_REQUIRE_PRIVILEGED=1). Run them with
//
//	make bench
//
// which is `go test -count=1 -run '^$' -bench . -benchtime 1x ./test/bench/...`.
// Every run is one measurement (b.N is ignored); the reported ns/op is
// meaningless and set to 0. MEMBRANE_BENCH_PODS changes the number of
// sequential pods per plugin (default 100), MEMBRANE_BENCH_RUNS the number
// of alternated datapath rounds (default 5), MEMBRANE_BENCH_MODES the
// datapath modes measured (comma-separated; ptp and veth always),
// MEMBRANE_BENCH_OUT the file the datapath results are written to as JSON.
// docs/benchmarks.md has the latest results and how to regenerate them.
//
// Everything the benchmarks make (netns, veths, cnitool's cached results,
// bpffs pins, processes) is removed when they end, whatever the outcome;
// traffic never leaves the network namespaces they create.
package bench
