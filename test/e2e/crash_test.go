package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// reclaimDone is what the agent logs once it has checked the allocations
// it restored for the ones a crash leaked.
const reclaimDone = "Checked restored allocations for leaks"

// The agent is killed (SIGKILL) while thirty ADDs run, then restarted.
// Whatever the crash interrupted, each pod ends up either fully attached
// (its ADD succeeded: ready endpoint, its address, its veth, traffic) or
// fully gone (its ADD failed: no address once the agent has reclaimed the
// leaked ones, no endpoint, no veth), and the runtime's DEL and ADD of a
// failed pod then succeed.
func TestCrashDuringAdds(t *testing.T) {
	setup(t)
	const N = 30
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	pods := make([]*pod, N)
	for i := range pods {
		name := fmt.Sprintf("crash-%d", i)
		a.putPod("crash", name, map[string]string{"app": "crash"})
		pods[i] = newPod(t, "crash", name)
	}

	errs := make([]error, N)
	var wg sync.WaitGroup
	var succeeded atomic.Int64
	for i, p := range pods {
		wg.Go(func() {
			if errs[i] = n.add(p); errs[i] == nil {
				succeeded.Add(1)
			}
		})
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// Kill in the middle: once a quarter of the ADDs have succeeded, the
	// others are at every step of theirs.
	e2eutil.Eventually(t, 2*time.Minute, "a quarter of the ADDs succeeded", func() error {
		select {
		case <-allDone:
			return nil
		default:
		}
		if got := succeeded.Load(); got < N/4 {
			return fmt.Errorf("%d ADDs succeeded", got)
		}
		return nil
	})
	a.Kill()
	<-allDone

	var ok, failed []*pod
	for i, p := range pods {
		if errs[i] == nil {
			ok = append(ok, p)
		} else {
			failed = append(failed, p)
		}
	}
	t.Logf("%d ADDs succeeded, %d failed with the agent killed", len(ok), len(failed))

	checksBefore := strings.Count(a.Log(1<<20), reclaimDone)
	a.Restart()
	e2eutil.Eventually(t, 2*time.Minute, "the restarted agent checked its restored allocations", func() error {
		if strings.Count(a.Log(1<<20), reclaimDone) == checksBefore {
			return fmt.Errorf("no %q in the log yet", reclaimDone)
		}
		return nil
	})
	if t.Failed() {
		a.DumpLog()
		t.FailNow()
	}
	t.Logf("the restarted agent released %d leaked addresses", strings.Count(a.Log(1<<20), "Released leaked pod address"))

	router := a.PodCIDR.Addr().Next()
	var kept []string
	for _, p := range ok {
		assertAttached(t, a, p, router)
		kept = append(kept, p.IP().String())
	}
	for _, p := range failed {
		assertGone(t, a, p, netipInvalid)
	}
	var held []string
	for _, r := range a.IPs() {
		held = append(held, r.IP)
	}
	slices.Sort(kept)
	slices.Sort(held)
	if !slices.Equal(held, kept) {
		t.Errorf("the agent holds %v, want exactly the attached pods' %v", held, kept)
	}
	assertIPCacheHolds(t, a, kept, router)
	if t.Failed() {
		a.DumpLog()
		t.FailNow()
	}

	// What containerd does with a sandbox whose ADD failed: DEL it, and
	// ADD again when the pod is retried.
	for _, p := range failed {
		a.putPod("crash", p.Name, map[string]string{"app": "crash"}) // as the pod watcher does again
		if err := n.del(p); err != nil {
			t.Errorf("DEL of failed pod %s: %v", p.Name, err)
			continue
		}
		if err := n.add(p); err != nil {
			t.Errorf("ADD retried for pod %s: %v", p.Name, err)
			continue
		}
		assertAttached(t, a, p, router)
	}
}

// assertAttached checks that a pod whose ADD succeeded is whole: its
// endpoint ready, its address owned by its attachment, its host veth
// there, and the pod reaches its gateway.
func assertAttached(t *testing.T, a *agent, p *pod, router netip.Addr) {
	t.Helper()
	att := p.Attachment()
	e2eutil.Eventually(t, 30*time.Second, "endpoint of "+p.Name+" ready", func() error {
		ep := a.endpoint(att)
		if ep == nil {
			return fmt.Errorf("pod %s has no endpoint", p.Name)
		}
		if ep.State != models.StateReady {
			return fmt.Errorf("pod %s: endpoint %d is %s", p.Name, ep.ID, ep.State)
		}
		return nil
	})
	if ips := a.ownedIPs(att); !slices.Equal(ips, []string{p.IP().String()}) {
		t.Errorf("pod %s: its attachment owns %v, want [%s]", p.Name, ips, p.IP())
	}
	if !linkExists(att.HostVeth()) {
		t.Errorf("pod %s: host veth %s is missing", p.Name, att.HostVeth())
	}
	if err := ping(p, router.String()); err != nil {
		t.Error(err)
	}
}

// assertIPCacheHolds: the ipcache's pod-CIDR entries are exactly the
// attached pods' addresses (and the router's, if it has one): a failed
// ADD left none.
func assertIPCacheHolds(t *testing.T, a *agent, ips []string, router netip.Addr) {
	t.Helper()
	e2eutil.Eventually(t, 10*time.Second, "ipcache holds the attached pods only", func() error {
		var got []string
		for pfx := range a.IPCache() {
			if pfx.Bits() == 32 && a.PodCIDR.Contains(pfx.Addr()) && pfx.Addr() != router {
				got = append(got, pfx.Addr().String())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, ips) {
			return fmt.Errorf("ipcache pod entries %v, want %v", got, ips)
		}
		return nil
	})
}
