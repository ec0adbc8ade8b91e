package containerd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cniNetns lists containerd's sandbox netns (/var/run/netns/cni-*).
func cniNetns() []string {
	m, _ := filepath.Glob("/var/run/netns/cni-*")
	return m
}

// TestAgentRestartKeepsTheNetwork: the conflist stays while the agent
// restarts (the default: no --remove-cni-conf-on-shutdown), so containerd
// keeps reporting NetworkReady; a sandbox asked for meanwhile fails with
// an error naming the agent's socket. Its DEL succeeds (the plugin removes
// what it can alone and queues the rest for the agent), so containerd
// removes the failed sandbox and its netns at once, with nothing left for
// kubelet to collect. Sandboxes made before the restart keep working and
// are cleaned up after it.
func TestAgentRestartKeepsTheNetwork(t *testing.T) {
	e := newEnv(t, envOpts{})
	before := e.newPod("shop", "before", map[string]string{"app": "web"})
	e.mustRun(before)
	conflist, err := os.ReadFile(e.Agent.Conflist)
	if err != nil {
		t.Fatal(err)
	}

	e.Agent.Stop()
	if _, err := os.Stat(e.Agent.Conflist); err != nil {
		t.Fatalf("the conflist was removed when the agent stopped: %v", err)
	}
	if ready, why, err := e.Ctrd.networkReady(ctxT(t)); err != nil || !ready {
		t.Errorf("containerd reports NetworkReady=%v (%s, %v) while the agent restarts: kubelet would mark the node NotReady", ready, why, err)
	}
	netnsBefore := cniNetns()
	during := e.newPodUnregistered("shop", "during")
	if _, err := e.run(ctxT(t), during); err == nil {
		t.Fatal("RunPodSandbox succeeded with the agent down")
	} else if !strings.Contains(err.Error(), e.Agent.Socket) {
		t.Errorf("the error kubelet would show does not name the agent's socket %s: %v", e.Agent.Socket, err)
	}

	if err := e.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	// containerd tore the failed sandbox down itself: the queued DEL
	// succeeded, so there is nothing for kubelet's garbage collection.
	list, err := e.Ctrd.RT.ListPodSandbox(ctxT(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if s.Metadata.Name == during.Name {
			t.Errorf("containerd kept the failed sandbox %s (%s): its DEL with the agent down did not succeed", s.Id, s.State)
			during.ID = s.Id
			if err := e.stop(ctxT(t), during); err != nil {
				t.Error(err)
			}
			if err := e.remove(ctxT(t), during); err != nil {
				t.Error(err)
			}
		}
	}
	if leaked := slices.DeleteFunc(cniNetns(), func(n string) bool { return slices.Contains(netnsBefore, n) }); len(leaked) > 0 {
		t.Errorf("the failed sandbox's netns %v survive its removal", leaked)
	}
	if during.ID != "" {
		e.assertGone(t, during)
	}
	if again, err := os.ReadFile(e.Agent.Conflist); err != nil || string(again) != string(conflist) {
		t.Errorf("after the restart the conflist is %q (%v), want it unchanged", again, err)
	}
	e.checkSandbox(t, before)
	after := e.newPod("shop", "after", map[string]string{"app": "web"})
	e.mustRun(after)
	e.checkSandbox(t, after)
	if !canPing(after, before.IP.String()) {
		t.Error("a sandbox made after the restart does not reach one made before it")
	}

	for _, p := range []*pod{before, after} {
		if err := e.stop(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
		if err := e.remove(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
	}
	e.assertGone(t, before, after)
	e.assertNoIdentityReferences(t)
}
