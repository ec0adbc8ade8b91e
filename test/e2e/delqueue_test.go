package e2e

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/delqueue"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// queued lists the DELs waiting in the agent's queue (file names).
func queued(t *testing.T, a *agent) []string {
	t.Helper()
	des, err := os.ReadDir(delqueue.Dir(a.StateDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".json") && !strings.HasPrefix(de.Name(), ".") {
			names = append(names, de.Name())
		}
	}
	return names
}

// enqueue writes an entry the way membrane-cni does, with the agent down.
func enqueue(t *testing.T, a *agent, e *delqueue.Entry) {
	t.Helper()
	l, err := delqueue.TryShared(a.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if _, err := l.Enqueue(e); err != nil {
		t.Fatal(err)
	}
}

// A queued DEL never removes a later ADD of its attachment. The plugin
// cannot make that case (a DEL is queued only while no agent runs, and the
// agent does the queue before it serves an ADD), but an entry that stays
// queued after a failed processing waits for the next start while the
// attachment is added again. Such entries are written here directly:
// one queued before the endpoint was created, one that removed another
// host veth (ifindex). Both pods keep everything; the entries are done
// with; a third, for a pod the agent never knew, is a success too.
func TestQueuedDelSparesALaterAdd(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	a.putPod("shop", "web", map[string]string{"app": "web"})
	a.putPod("shop", "db", map[string]string{"app": "db"})
	web, db := newPod(t, "shop", "web"), newPod(t, "shop", "db")
	for _, p := range []*pod{web, db} {
		if err := n.add(p); err != nil {
			t.Fatal(err)
		}
	}
	webEP, dbEP := a.endpoint(web.Attachment()), a.endpoint(db.Attachment())

	a.Stop()
	enqueue(t, a, &delqueue.Entry{Version: delqueue.Version, ContainerID: web.ContainerID, IfName: "eth0", Pod: "shop/web",
		Queued: webEP.Created.Add(-time.Minute)})
	enqueue(t, a, &delqueue.Entry{Version: delqueue.Version, ContainerID: db.ContainerID, IfName: "eth0", Pod: "shop/db",
		HostIfIndex: int(dbEP.InterfaceIndex) + 1000, Queued: time.Now()})
	enqueue(t, a, &delqueue.Entry{Version: delqueue.Version, ContainerID: "never-known", IfName: "eth0", Queued: time.Now()})
	a.Restart()

	if q := queued(t, a); len(q) != 0 {
		t.Errorf("queued DELs after the start: %v, want none", q)
	}
	for _, p := range []*pod{web, db} {
		if err := n.check(p); err != nil {
			t.Errorf("pod %s after a stale queued DEL: %v", p.Name, err)
		}
		if ips := a.ownedIPs(p.Attachment()); len(ips) != 1 || ips[0] != p.IP().String() {
			t.Errorf("pod %s holds %v, want %s", p.Name, ips, p.IP())
		}
	}
	if got := strings.Count(a.Log(200), "added again after it"); got != 2 {
		t.Errorf("the log says %d times that a queued DEL spared a later ADD, want 2:\n%s", got, a.Log(30))
	}
	for _, p := range []*pod{web, db} {
		if err := n.del(p); err != nil {
			t.Fatal(err)
		}
		assertGone(t, a, p, p.IP())
	}
}

// An agent starting while membrane-cni queues a DEL misses nothing: it
// waits for the plugin's lock, then does the queue, and only then opens
// its socket. Here the test holds the plugin's lock while the agent
// starts: the agent says it waits and does not answer; a real DEL run
// meanwhile is queued (and an ADD fails: no agent answers yet); once the
// lock goes, the agent does the DEL before its first answer.
func TestAgentStartWaitsForQueueingPlugins(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	a.putPod("shop", "web", map[string]string{"app": "web"})
	web := newPod(t, "shop", "web")
	if err := n.add(web); err != nil {
		t.Fatal(err)
	}
	webIP := web.IP()
	a.Stop()

	held, err := delqueue.TryShared(a.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Unlock() })
	started := make(chan error, 1)
	go func() { started <- a.Start() }()
	e2eutil.Eventually(t, 20*time.Second, "the agent waits for the queue's lock", func() error {
		if !strings.Contains(a.Log(50), "Waiting for membrane-cni to finish queueing DELs") {
			return errors.New("no such line in the agent's log yet")
		}
		return nil
	})

	if err := n.del(web); err != nil {
		t.Fatalf("DEL while the starting agent waits for the queue: %v", err)
	}
	late := newPod(t, "shop", "late")
	if err := n.add(late); err == nil {
		t.Error("ADD succeeded while the agent was waiting to do the queue")
	}
	if _, err := a.Client.Healthz(ctxT(t)); err == nil {
		t.Fatal("the agent answers while it has not read the queue")
	}
	select {
	case err := <-started:
		t.Fatalf("the agent started while a plugin held the queue: %v", err)
	default:
	}

	held.Unlock()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, web, webIP)
	assertNoIdleIdentities(t, a)
	if q := queued(t, a); len(q) != 0 {
		t.Errorf("queued DELs after the start: %v, want none", q)
	}
}
