package containerd

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentSandboxes: 20 RunPodSandbox at once, as kubelet does when
// a node gets a batch of pods, all succeed with distinct addresses and
// the right identities; 20 concurrent stop+remove leave nothing.
func TestConcurrentSandboxes(t *testing.T) {
	const n = 20
	e := newEnv(t, envOpts{})
	pods := make([]*pod, n)
	for i := range pods {
		// Four label sets: four identities shared by five pods each.
		pods[i] = e.newPod("batch", fmt.Sprintf("job-%d", i), map[string]string{"app": "batch", "shard": fmt.Sprint(i % 4)})
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, p := range pods {
		wg.Go(func() { _, errs[i] = e.run(ctxT(t), p) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	ips := map[string]string{}
	byShard := map[string]map[uint32]bool{}
	for _, p := range pods {
		ep := e.checkSandbox(t, p)
		if other, dup := ips[p.IP.String()]; dup {
			t.Errorf("%s and %s share address %s", p.Name, other, p.IP)
		}
		ips[p.IP.String()] = p.Name
		s := p.Labels["shard"]
		if byShard[s] == nil {
			byShard[s] = map[uint32]bool{}
		}
		byShard[s][ep.Identity.ID] = true
	}
	seen := map[uint32]string{}
	for s, ids := range byShard {
		if len(ids) != 1 {
			t.Errorf("shard %s: pods with the same labels got identities %v", s, ids)
		}
		for id := range ids {
			if other, dup := seen[id]; dup {
				t.Errorf("shards %s and %s have different labels but share identity %d", s, other, id)
			}
			seen[id] = s
		}
	}
	if got := len(e.Agent.Endpoints()); got != n {
		t.Errorf("the agent lists %d endpoints, want %d", got, n)
	}

	for i, p := range pods {
		wg.Go(func() {
			if errs[i] = e.stop(ctxT(t), p); errs[i] == nil {
				errs[i] = e.remove(ctxT(t), p)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	e.assertGone(t, pods...)
	e.assertNoIdentityReferences(t)
	if got := len(e.Agent.Endpoints()); got != 0 {
		t.Errorf("%d endpoints remain", got)
	}
}
