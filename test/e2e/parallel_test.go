package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
)

// Twenty pods attached at once, as a node does when a deployment scales:
// every ADD succeeds, every pod gets its own address and a ready endpoint,
// all share the identity their common labels call for.
func TestParallelAdds(t *testing.T) {
	setup(t)
	const N = 20
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	pods := make([]*pod, N)
	for i := range pods {
		name := fmt.Sprintf("load-%d", i)
		a.putPod("load", name, map[string]string{"app": "load"})
		pods[i] = newPod(t, "load", name)
	}

	errs := make([]error, N)
	durs := make([]time.Duration, N)
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			t0 := time.Now()
			errs[i] = n.add(p)
			durs[i] = time.Since(t0)
		})
	}
	wg.Wait()
	makespan := time.Since(start)
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(durs)
	t.Logf("%d parallel cnitool add: makespan %s, slowest ADD %s, fastest %s", N, makespan.Round(time.Millisecond),
		durs[N-1].Round(time.Millisecond), durs[0].Round(time.Millisecond))

	seen := map[string]string{}
	var identity uint32
	for _, p := range pods {
		ip := p.IP().String()
		if other, dup := seen[ip]; dup {
			t.Errorf("pods %s and %s both got %s", other, p.Name, ip)
		}
		seen[ip] = p.Name
		ep := a.endpoint(p.Attachment())
		if ep == nil || ep.State != models.StateReady || ep.Identity == nil {
			t.Errorf("pod %s: endpoint %+v, want ready with an identity", p.Name, ep)
			continue
		}
		if identity == 0 {
			identity = ep.Identity.ID
		} else if ep.Identity.ID != identity {
			t.Errorf("pod %s has identity %d, the others %d", p.Name, ep.Identity.ID, identity)
		}
	}
	if got := len(a.Endpoints()); got != N {
		t.Errorf("%d endpoints, want %d", got, N)
	}

	start = time.Now()
	for i, p := range pods {
		wg.Go(func() { errs[i] = n.del(p) })
	}
	wg.Wait()
	t.Logf("%d parallel cnitool del: makespan %s", N, time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			t.Error(err)
			continue
		}
		assertGone(t, a, pods[i], pods[i].IP())
	}
}
