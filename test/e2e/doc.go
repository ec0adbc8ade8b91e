// Package e2e is Membrane's end-to-end suite: the real membrane-agent,
// membrane-cni and membrane binaries, driven by the real cnitool
// (`go tool cnitool`, the runtime's side of CNI) on real network
// namespaces, as an operator would see them.
//
// TestMain builds the three binaries once into a temporary directory. Each
// test starts its own agent on temporary paths (socket, state dir, a bpffs
// directory under /sys/fs/bpf, a pod CIDR of its own in 10.210.0.0 -
// 10.249.255.255 that no route on the machine uses yet) and its own CNI
// network, so tests and concurrent runs do not see each other. Everything
// a test makes (netns, veths, cnitool's cached results, the agent process)
// is removed when it ends, whatever the outcome.
//
// The suite needs root. Without it every test skips, unless
// MEMBRANE_REQUIRE_PRIVILEGED=1 (CI), where that is a failure. `go test
// -short` skips it. Run it alone with
//
//	go test -count=1 -v ./test/e2e/
//
// and set MEMBRANE_E2E_KEEP_LOGS=1 to have every agent's log printed.
package e2e
