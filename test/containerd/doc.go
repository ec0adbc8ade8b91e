// Package containerd runs Membrane under containerd's CRI the way kubelet
// drives it, installed the way docs/install.md says: Debian's containerd
// (+ runc) on temporary paths (root, state, gRPC socket, runc root, CNI bin
// and conf dirs), `membrane-agent install-cni` filling the CNI bin dir, the
// agent writing its conflist into the CRI plugin's conf dir once it serves
// (--write-cni-conf-when-ready: containerd reports NetworkReady only then),
// a sandbox image built and imported offline (a static pause binary packed
// by hand as an OCI image layout, `ctr images import`), and a small CRI
// client (k8s.io/cri-api over the containerd socket):
//
//   - TestSandboxLifecycle: pods whose labels the agent knows get addresses
//     and identities (same labels share one), reach each other, and
//     StopPodSandbox + RemovePodSandbox (a second DEL with an empty netns)
//     leave no veth, address, endpoint, netns, mount, cached result or
//     identity reference.
//   - TestPolicyBetweenSandboxes: an L4 policy (PUT /v1/policy) enforced
//     between sandboxes with TCP and ICMP from inside their netns.
//   - TestConcurrentSandboxes: 20 RunPodSandbox at once.
//   - TestWhatContainerdSends: every plugin call containerd makes, recorded
//     (capitalised runtimeConfig keys, pod annotations, CNI_ARGS order,
//     ADD/DEL/DEL), all accepted.
//   - TestAgentRestartKeepsTheNetwork: the conflist and NetworkReady
//     survive an agent restart; sandboxes made before it keep working.
//   - TestMakeInstallAndUninstall: make install / uninstall into a DESTDIR.
//   - BenchmarkRunPodSandbox: RunPodSandbox p50/p99 and the makespan of 20
//     concurrent ones, Membrane against ptp + host-local under the same
//     containerd (a second runtime handler with its own CNI conf dir).
//
// It is a module of its own so the main module does not carry the CRI API
// and gRPC; `make test` and `make bench` run it after the main module's:
//
//	cd test/containerd && go test -count=1 ./...
//	cd test/containerd && go test -run '^$' -bench . -benchtime 1x ./...
//
// The tests need root and skip without it (fail under
// MEMBRANE_REQUIRE_PRIVILEGED=1, as in CI); `make deps` installs
// containerd, runc and the reference plugins. MEMBRANE_CTRD_KEEP_LOGS=1
// prints containerd's and the agent's logs of passing tests too.
// Everything is removed at the end whatever the outcome: sandboxes through
// the CRI, containerd stopped by its PID, then, if anything survived, runc
// containers, shims, mounts under the temporary root, netns, host veths
// and cached CNI results, which the test then reports as a failure.
package containerd
