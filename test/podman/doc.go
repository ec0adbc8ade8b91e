// Package podman is Membrane's podman suite: `podman run --network
// membrane` with the real podman (Debian's 4.3, CNI backend, runc), the
// real membrane-agent, membrane-cni and membrane binaries, as a user on a
// single host would run them.
//
// Podman tells the CNI plugin only the container's name (CNI_ARGS
// K8S_POD_NAME=<name>; for a container in a podman pod, the pod's name), so
// a container named web takes the labels registered for pod default/web:
//
//	membrane pod label web app=web
//	podman run -d --network membrane --name web IMAGE
//
// The suite checks what a user sees: the container's address comes from the
// agent; its endpoint is ready with the identity of its labels (shared by
// containers with the same labels) and in the ipcache; containers reach each
// other; an L4 policy between them is enforced; a container started without
// labels fails with a message saying how to register them, and starts once
// they are; `podman rm -f` (and a container that exits by itself, whose DEL
// comes from podman's separate cleanup process with a prevResult) leaves no
// veth, address, endpoint, netns, ipcache entry or identity reference.
//
// Nothing of the machine's podman setup is used or changed. TestMain builds
// the three binaries and an image tarball (busybox-static's binary and its
// applet links, no registry needed) once. Each test starts its own agent on
// temporary paths and its own podman: containers.conf through
// CONTAINERS_CONF (CNI backend, cni_plugin_dirs holding only the built
// membrane-cni, network_config_dir holding a "membrane" conflist that points
// at the test's agent, cgroupfs, runc, file events and locks, tmp_dir and
// storage under a temporary directory, vfs storage so nothing is mounted),
// then `podman import`s the tarball.
//
// The suite needs root and the Debian packages podman, runc, catatonit and
// busybox-static (`make deps` installs them). Without root every test
// skips, unless MEMBRANE_REQUIRE_PRIVILEGED=1 (CI), where that is a
// failure; without the packages they fail and say what to install. `go
// test -short` skips it. Run it alone with
//
//	go test -count=1 -v ./test/podman/
//
// and set MEMBRANE_PODMAN_KEEP_LOGS=1 to have the agent's log printed.
package podman
