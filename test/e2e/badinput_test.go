package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

// A second ADD of the same attachment (same container ID and interface)
// fails, and the first pod keeps everything it had.
func TestDuplicateAttachment(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	p := newPod(t, "shop", "web")
	a.putPod("shop", "web", map[string]string{"app": "web"})
	if err := n.add(p); err != nil {
		t.Fatal(err)
	}
	before := a.endpoint(p.Attachment())

	err := n.add(&pod{Namespace: p.Namespace, Name: p.Name, NetnsName: p.NetnsName, Netns: p.Netns, ContainerID: p.ContainerID})
	if err == nil {
		t.Fatal("a second ADD of the same attachment succeeded")
	}
	if !strings.Contains(err.Error(), "already") || !strings.Contains(err.Error(), "shop/web") {
		t.Errorf("the error should say the attachment already exists and name the pod: %v", err)
	}

	// Nothing of the second ADD is left, nothing of the first is lost.
	after := a.endpoint(p.Attachment())
	if after == nil || after.ID != before.ID || after.State != models.StateReady {
		t.Errorf("first endpoint: before %+v, after %+v", before, after)
	}
	if ips := a.ownedIPs(p.Attachment()); len(ips) != 1 || ips[0] != p.IP().String() {
		t.Errorf("addresses of the attachment: %v, want only %s", ips, p.IP())
	}
	if all := a.IPs(); len(all) != 1 {
		t.Errorf("the agent holds %d addresses, want 1: %+v", len(all), all)
	}
	if eps := a.Endpoints(); len(eps) != 1 {
		t.Errorf("the agent has %d endpoints, want 1", len(eps))
	}
	if err := n.check(p); err != nil {
		t.Errorf("first attachment damaged: %v", err)
	}
	if err := ping(p, p.Result.IPs[0].Gateway.String()); err != nil {
		t.Error(err)
	}
	if ids := a.Identities(); len(ids) != 1 || ids[after.Identity.ID] != 1 {
		t.Errorf("identities %v: want only %d, used once", ids, after.Identity.ID)
	}
	if err := n.del(p); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, p, p.IP())
}

// With the pod CIDR used up, ADD fails with an error that says so and
// leaves no veth, address or endpoint; once a pod goes, its address can be
// used again.
func TestIPAMExhaustion(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{Bits: 29}) // 8 addresses: network, router, broadcast and 5 for pods
	n := newNetwork(t, a, "", nil)
	var added []*pod
	var failed *pod
	var addErr error
	for i := range 8 {
		name := fmt.Sprintf("p%d", i)
		a.putPod("fill", name, map[string]string{"app": "fill"})
		p := newPod(t, "fill", name)
		if addErr = n.add(p); addErr != nil {
			failed = p
			break
		}
		added = append(added, p)
	}
	if failed == nil {
		t.Fatalf("8 ADDs fit in the /29 %s", a.PodCIDR)
	}
	if len(added) != 5 {
		t.Errorf("%d pods fit in the /29 %s, want 5 (8 less network, router and broadcast)", len(added), a.PodCIDR)
	}
	if !strings.Contains(addErr.Error(), "no free address") || !strings.Contains(addErr.Error(), "fill/"+failed.Name) {
		t.Errorf("the error should say the pod CIDR is exhausted and name the pod: %v", addErr)
	}
	assertGone(t, a, failed, netipInvalid)
	if got := len(a.IPs()); got != len(added) {
		t.Errorf("%d addresses allocated, want %d", got, len(added))
	}
	if got := len(a.Endpoints()); got != len(added) {
		t.Errorf("%d endpoints, want %d", got, len(added))
	}
	if out, err := exec.Command("ip", "-n", failed.NetnsName, "link", "show", "eth0").CombinedOutput(); err == nil {
		t.Errorf("the failed pod has an eth0: %s", out)
	}
	for id, users := range a.Identities() {
		if users != len(added) {
			t.Errorf("identity %d is used by %d endpoints, want %d", id, users, len(added))
		}
	}

	if err := n.del(added[0]); err != nil {
		t.Fatal(err)
	}
	if err := n.add(failed); err != nil {
		t.Fatalf("ADD after a DEL freed an address: %v", err)
	}
	if err := n.check(failed); err != nil {
		t.Error(err)
	}
}

// With the agent down, ADD fails with an error naming the socket and
// leaves nothing behind; STATUS says the plugin is unavailable; DEL removes
// the veth, queues the rest for the agent and succeeds, so the runtime can
// forget the pod. The agent, once back, has done the DEL before it
// answers: the pod's address, endpoint, identity reference and ipcache
// entry are gone without any retry.
func TestAgentDown(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	a.putPod("shop", "web", map[string]string{"app": "web"})
	a.putPod("shop", "db", map[string]string{"app": "db"})
	web := newPod(t, "shop", "web")
	if err := n.add(web); err != nil {
		t.Fatal(err)
	}
	webIP := web.IP()

	a.Stop()
	db := newPod(t, "shop", "db")
	err := n.add(db)
	if err == nil {
		t.Fatal("ADD succeeded with the agent down")
	}
	want := "membrane-agent not reachable at " + a.Socket + ": is it running?"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "shop/db") {
		t.Errorf("ADD error should contain %q and name the pod: %v", want, err)
	}
	if linkExists(db.Attachment().HostVeth()) {
		t.Errorf("ADD with the agent down left veth %s", db.Attachment().HostVeth())
	}
	if out, err := exec.Command("ip", "-n", db.NetnsName, "link", "show", "eth0").CombinedOutput(); err == nil {
		t.Errorf("ADD with the agent down left eth0 in the pod: %s", out)
	}
	_, err = n.cnitool("status", db, "")
	if err == nil || !strings.Contains(err.Error(), a.Socket) {
		t.Errorf("STATUS with the agent down: %v", err)
	}

	// kubelet DELs twice; both succeed and make one queue entry. The
	// failed ADD's DEL (the runtime's cleanup) is queued too.
	for i := range 2 {
		if err := n.del(web); err != nil {
			t.Fatalf("DEL %d with the agent down: %v", i+1, err)
		}
	}
	if err := n.del(db); err != nil {
		t.Fatalf("DEL of the pod whose ADD failed, agent down: %v", err)
	}
	if linkExists(web.Attachment().HostVeth()) {
		t.Errorf("DEL with the agent down kept veth %s", web.Attachment().HostVeth())
	}
	if q := queued(t, a); len(q) != 2 {
		t.Errorf("queued DELs: %v, want one for web and one for db", q)
	}

	// The agent comes back (same state dir): the DELs are done, the
	// queue is empty, and the pod that failed to start can be added.
	a.Restart()
	assertGone(t, a, web, webIP)
	assertNoIdleIdentities(t, a)
	if q := queued(t, a); len(q) != 0 {
		t.Errorf("queued DELs after the agent's start: %v, want none", q)
	}
	if !strings.Contains(a.Log(100), "Queued CNI DEL done") {
		t.Errorf("the agent's log does not say it did the queued DEL:\n%s", a.Log(30))
	}
	if err := n.del(web); err != nil {
		t.Fatalf("DEL retried with the agent back: %v", err)
	}
	if err := n.add(db); err != nil {
		t.Fatalf("ADD with the agent back: %v", err)
	}
	if ips := a.IPs(); len(ips) != 1 || ips[0].IP != db.IP().String() {
		t.Errorf("addresses after the failed ADD and the retry: %+v (the failed ADD must not hold one)", ips)
	}
}

// A configuration the plugin cannot use fails before anything is made.
func TestInvalidConfig(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	for _, tc := range []struct {
		conf map[string]any
		want string
	}{
		{map[string]any{"mtu": 10}, `"mtu" 10 is out of range`},
		{map[string]any{"socket": "relative.sock"}, `"socket" must be an absolute path`},
	} {
		n := newNetwork(t, a, "", tc.conf)
		p := newPod(t, "shop", "web")
		err := n.add(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ADD with %v: %v, want an error containing %q", tc.conf, err, tc.want)
		}
		assertGone(t, a, p, netipInvalid)
	}
	if ips := a.IPs(); len(ips) != 0 {
		t.Errorf("rejected configurations allocated addresses: %+v", ips)
	}
}
