package e2eutil

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// What the suites that drive plugins with the real cnitool share.

// WriteConflist writes conf, named name, as dir/10-NAME.conflist: a
// network configuration list in a directory of its own, cnitool's
// NETCONFPATH. The results cnitool (libcni) caches for the network under
// /var/lib/cni are removed when the test ends.
func WriteConflist(tb testing.TB, dir, name string, conf map[string]any) {
	tb.Helper()
	conf["name"] = name
	raw, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-"+name+".conflist"), raw, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", name+"-*"))
		for _, f := range files {
			os.Remove(f)
		}
	})
}

// CnitoolContainerID is the container ID (CNI_CONTAINERID) cnitool
// derives from a netns path.
func CnitoolContainerID(netns string) string {
	sum := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

// PodCNIArgs is the CNI_ARGS containerd passes for pod namespace/name in
// the sandbox containerID (its UID: uid-NAME; a Pod object's real UID:
// PodCNIArgsUID).
func PodCNIArgs(namespace, name, containerID string) string {
	return PodCNIArgsUID(namespace, name, containerID, "uid-"+name)
}

// PodCNIArgsUID is PodCNIArgs for a pod with UID uid: the agent writes a
// CiliumEndpoint only for an endpoint whose UID is its Pod object's.
func PodCNIArgsUID(namespace, name, containerID, uid string) string {
	return fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s;IgnoreUnknown=1",
		namespace, name, containerID, uid)
}
