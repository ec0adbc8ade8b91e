// Package e2eutil is the harness Membrane's end-to-end suites share
// (test/e2e, test/podman, test/bench, test/containerd, and the CNI
// plugin's tests): the binaries under test built once, a real
// membrane-agent process on temporary paths (in a network namespace of
// the test's if AgentConfig.Netns says so), free pod CIDRs, a bounded
// Eventually, the traffic tool, and for the benchmarks the reference ptp
// network and the statistics.
//
// A suite's TestMain dispatches the traffic tool first, then builds and
// runs:
//
//	func TestMain(m *testing.M) {
//		if tool := os.Getenv(e2eutil.ToolEnv); tool != "" {
//			os.Exit(e2eutil.RunTool(tool, os.Args[1:]))
//		}
//		os.Exit(e2eutil.RunSuite(m, "membrane-e2e-bin", func(dir string) {
//			bins = e2eutil.Build(dir, "", e2eutil.AgentBin, e2eutil.PluginBin)
//		}))
//	}
//
// and a test starts an agent of its own, stopped by its PID when the test
// ends, its log printed if the test failed:
//
//	a := e2eutil.StartAgent(t, e2eutil.AgentConfig{Binary: bins.Agent, Pool: e2eutil.PoolE2E})
//
// Traffic comes from the test binary itself, re-executed inside a pod's
// network namespace (see Netns): a TCP and UDP server, and clients that
// give up after a second.
//
// Everything here needs root (netns, veths, BPF); the suites gate their
// tests with testutil.RequirePrivileged first. Processes are stopped by
// the PID they were started with, never by name: other runs may share the
// machine. The suites' own specifics (their networks and pods, podman's
// configuration, containerd) stay with them.
package e2eutil
