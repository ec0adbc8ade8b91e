package cells_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/hive"
	"github.com/cilium/hive/hivetest"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointapi"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// agent is a full default hive on temporary paths, driven through its
// real API socket.
type agent struct {
	t        *testing.T
	h        *hive.Hive
	c        *client.Client
	socket   string
	stateDir string
	bpfRoot  string
	stopFn   func()
}

type agentOpts struct {
	podTimeout time.Duration
	syncBuild  time.Duration
	parallel   int
	maxWait    time.Duration
}

func startAgent(t *testing.T, stateDir, bpfRoot string, o agentOpts) *agent {
	t.Helper()
	a := &agent{t: t, socket: filepath.Join(t.TempDir(), "membrane.sock"), stateDir: stateDir, bpfRoot: bpfRoot}
	a.h = cells.NewAgentHive(cells.DefaultCells)
	hive.AddConfigOverride(a.h, func(c *apiserver.Config) { c.Socket = a.socket })
	hive.AddConfigOverride(a.h, func(c *statedir.Config) { c.StateDir = stateDir })
	hive.AddConfigOverride(a.h, func(c *loader.Config) { c.BPFRoot = bpfRoot })
	hive.AddConfigOverride(a.h, func(c *ipam.Config) { c.PodCIDR = "10.251.0.0/24" })
	hive.AddConfigOverride(a.h, func(c *endpointmanager.Config) {
		if o.podTimeout > 0 {
			c.PodMetadataTimeout = o.podTimeout
		}
	})
	hive.AddConfigOverride(a.h, func(c *endpointapi.Config) {
		if o.syncBuild > 0 {
			c.SyncBuildTimeout = o.syncBuild
		}
		if o.parallel > 0 {
			c.EndpointAPIParallel = o.parallel
		}
		if o.maxWait > 0 {
			c.EndpointAPIMaxWait = o.maxWait
		}
	})
	log := hivetest.Logger(t)
	if err := a.h.Start(log, context.Background()); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	stopped := false
	a.stopFn = func() {
		if !stopped {
			stopped = true
			a.h.Stop(log, context.Background())
		}
	}
	t.Cleanup(a.stop)
	a.c = client.New(a.socket)
	return a
}

func (a *agent) stop() { a.stopFn() }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func (a *agent) putPod(ns, name string, ls map[string]string) {
	a.t.Helper()
	if _, err := a.c.PutPod(ctx(a.t), &models.Pod{Namespace: ns, Name: name, Labels: ls}); err != nil {
		a.t.Fatalf("put pod %s/%s: %v", ns, name, err)
	}
}

func (a *agent) createEndpoint(cid, ip, pod string, ifindex int64) (*models.Endpoint, error) {
	return a.c.PutEndpoint(ctx(a.t), "0", &models.EndpointChangeRequest{
		ContainerID: cid, ContainerInterfaceName: "eth0", InterfaceIndex: ifindex,
		Addressing: &models.AddressPair{IPv4: ip}, K8sNamespace: "default", K8sPodName: pod,
		SyncBuildEndpoint: true,
	})
}

// ipcacheIdentity reads the pinned ipcache map the way the CLI does.
func (a *agent) ipcacheIdentity(ip string) (uint32, bool) {
	a.t.Helper()
	m, err := maps.OpenPinned(a.bpfRoot, maps.IPCacheMapName)
	if err != nil {
		a.t.Fatal(err)
	}
	defer m.Close()
	var v maps.IPCacheValue
	err = m.Lookup(maps.NewIPCacheKey(netip.PrefixFrom(netip.MustParseAddr(ip), 32)), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return v.Identity, true
}

// eventually polls cond with a bounded deadline (not a timing assertion:
// the deadline only stops a broken test from hanging).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAgentEndpointLifecycle(t *testing.T) {
	bpfRoot := testutil.BPFDir(t)
	stateDir := t.TempDir()
	a := startAgent(t, stateDir, bpfRoot, agentOpts{})

	a.putPod("default", "web-1", map[string]string{"app": "web", "pod-template-hash": "abc"})
	a.putPod("default", "web-2", map[string]string{"app": "web", "pod-template-hash": "def"})
	a.putPod("default", "db-1", map[string]string{"app": "db"})

	web1, err := a.createEndpoint("c-web-1", "10.251.0.11", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	web2, err := a.createEndpoint("c-web-2", "10.251.0.12", "web-2", 0)
	if err != nil {
		t.Fatal(err)
	}
	db1, err := a.createEndpoint("c-db-1", "10.251.0.13", "db-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []*models.Endpoint{web1, web2, db1} {
		if ep.State != models.StateReady || ep.Identity == nil || ep.Identity.ID < 256 {
			t.Fatalf("sync build answered before ready: %+v", ep)
		}
	}
	if web1.Identity.ID != web2.Identity.ID {
		t.Errorf("pods differing only in pod-template-hash got identities %d and %d", web1.Identity.ID, web2.Identity.ID)
	}
	if web1.Identity.ID == db1.Identity.ID {
		t.Errorf("web and db share identity %d", web1.Identity.ID)
	}
	for ip, want := range map[string]uint32{"10.251.0.11": web1.Identity.ID, "10.251.0.13": db1.Identity.ID} {
		if got, ok := a.ipcacheIdentity(ip); !ok || got != want {
			t.Errorf("ipcache %s = %d (present %v), want %d", ip, got, ok, want)
		}
	}

	// Relabelling the pod moves its endpoint to a new identity; the map follows.
	a.putPod("default", "db-1", map[string]string{"app": "db", "tier": "backend"})
	var newID uint32
	eventually(t, "db-1 to get a new identity and be ready", func() bool {
		ep, err := a.c.GetEndpoint(ctx(t), strconv.Itoa(int(db1.ID)))
		if err != nil || ep.State != models.StateReady || ep.Identity == nil || ep.Identity.ID == db1.Identity.ID {
			return false
		}
		newID = ep.Identity.ID
		return true
	})
	eventually(t, "ipcache to follow the relabel", func() bool {
		got, _ := a.ipcacheIdentity("10.251.0.13")
		return got == newID
	})
	// The old identity has no user left and is released.
	eventually(t, "old identity to be released", func() bool {
		_, err := a.c.GetIdentity(ctx(t), strconv.Itoa(int(db1.Identity.ID)))
		return client.IsStatus(err, 404)
	})

	// Duplicates are refused with the holder named, and leave nothing.
	_, err = a.createEndpoint("c-web-1", "10.251.0.99", "web-1", 0)
	if !client.IsStatus(err, 409) {
		t.Fatalf("duplicate attachment: %v", err)
	}
	_, err = a.createEndpoint("c-other", "10.251.0.11", "web-1", 0)
	if !client.IsStatus(err, 409) {
		t.Fatalf("duplicate IP: %v", err)
	}
	if eps, _ := a.c.ListEndpoints(ctx(t)); len(eps) != 3 {
		t.Fatalf("%d endpoints after refused duplicates, want 3", len(eps))
	}

	// Restart: endpoints come back with their IDs and identities, and the
	// pinned entries are never removed meanwhile.
	a.stop()
	if got, ok := a.ipcacheIdentity("10.251.0.11"); !ok || got != web1.Identity.ID {
		t.Fatalf("ipcache entry lost while the agent is down: %d %v", got, ok)
	}
	a = startAgent(t, stateDir, bpfRoot, agentOpts{})
	eventually(t, "restored endpoints to be ready", func() bool {
		eps, err := a.c.ListEndpoints(ctx(t))
		if err != nil || len(eps) != 3 {
			return false
		}
		for _, ep := range eps {
			if ep.State != models.StateReady {
				return false
			}
		}
		return true
	})
	ep, err := a.c.GetEndpoint(ctx(t), "container-id:c-web-1")
	if err != nil || ep.ID != web1.ID || ep.Identity.ID != web1.Identity.ID {
		t.Fatalf("restored web-1: %+v, %v (was ID %d identity %d)", ep, err, web1.ID, web1.Identity.ID)
	}

	// Delete removes the endpoint and its map entry; the identity stays
	// while web-2 still uses it.
	if err := a.c.DeleteEndpoint(ctx(t), "cni-attachment-id:c-web-1:eth0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ipcache entry of the deleted endpoint to go", func() bool {
		_, ok := a.ipcacheIdentity("10.251.0.11")
		return !ok
	})
	if _, err := a.c.GetIdentity(ctx(t), strconv.Itoa(int(web1.Identity.ID))); err != nil {
		t.Fatalf("identity still used by web-2 was released: %v", err)
	}
	if err := a.c.DeleteEndpoint(ctx(t), "cni-attachment-id:c-web-1:eth0"); !client.IsStatus(err, 404) {
		t.Fatalf("second delete: %v, want 404", err)
	}
}

func TestAgentUnknownPodFailsSyncBuild(t *testing.T) {
	a := startAgent(t, t.TempDir(), testutil.BPFDir(t), agentOpts{podTimeout: 300 * time.Millisecond})
	_, err := a.createEndpoint("c-ghost", "10.251.0.20", "ghost", 0)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != 400 {
		t.Fatalf("endpoint of an unknown pod: %v, want 400", err)
	}
	t.Log(ae.Message)
	if eps, _ := a.c.ListEndpoints(ctx(t)); len(eps) != 0 {
		t.Fatalf("failed sync build left %d endpoints", len(eps))
	}
	if ids, _ := a.c.ListIdentities(ctx(t)); len(ids) != 10 {
		t.Fatalf("failed sync build left identities: %+v", ids)
	}

	// Registered late but within the bound: the endpoint waits and succeeds.
	a2 := startAgent(t, t.TempDir(), testutil.BPFDir(t), agentOpts{podTimeout: 10 * time.Second})
	done := make(chan error, 1)
	go func() {
		_, err := a2.createEndpoint("c-late", "10.251.0.21", "late", 0)
		done <- err
	}()
	eventually(t, "endpoint waiting for its pod", func() bool {
		ep, err := a2.c.GetEndpoint(ctx(t), "container-id:c-late")
		return err == nil && ep.State == models.StateWaitingForIdentity && ep.Identity == nil
	})
	a2.putPod("default", "late", map[string]string{"app": "late"})
	if err := <-done; err != nil {
		t.Fatalf("endpoint whose pod arrived late: %v", err)
	}
}

func TestAgentRateLimit(t *testing.T) {
	// One slot and a short queue: while one sync build waits for a pod, a
	// second request queues and is answered 429.
	a := startAgent(t, t.TempDir(), testutil.BPFDir(t), agentOpts{parallel: 1, maxWait: 200 * time.Millisecond, podTimeout: 3 * time.Second})
	go a.createEndpoint("c-slow", "10.251.0.30", "slow", 0)
	eventually(t, "first request in flight", func() bool {
		_, err := a.c.GetEndpoint(ctx(t), "container-id:c-slow")
		return err == nil
	})
	_, err := a.createEndpoint("c-queued", "10.251.0.31", "", 0)
	if !client.IsStatus(err, 429) {
		t.Fatalf("second request: %v, want 429", err)
	}
}

func TestAgentManyEndpoints(t *testing.T) {
	a := startAgent(t, t.TempDir(), testutil.BPFDir(t), agentOpts{})
	a.putPod("default", "p", map[string]string{"app": "p"})
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			_, err := a.c.PutEndpoint(ctx(t), "0", &models.EndpointChangeRequest{
				ContainerID: fmt.Sprintf("c%d", i), Addressing: &models.AddressPair{IPv4: fmt.Sprintf("10.251.0.%d", 100+i)},
				Labels: []string{fmt.Sprintf("n=%d", i%4)}, SyncBuildEndpoint: true,
			})
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ids, err := a.c.ListIdentities(ctx(t))
	if err != nil || len(ids) != 10+4 {
		t.Fatalf("want 4 cluster identities for 4 label sets, got %d: %v", len(ids)-10, err)
	}
}

// The repository and the engine meet only in tables: every import and
// delete is a policy revision that the endpoints report once their
// datapath has it, also after a restart (the revision row is restored
// with the rules).
func TestAgentEndpointsReportPolicyRevision(t *testing.T) {
	bpfRoot, stateDir := testutil.BPFDir(t), t.TempDir()
	a := startAgent(t, stateDir, bpfRoot, agentOpts{})
	a.putPod("default", "web", map[string]string{"app": "web"})
	ep, err := a.createEndpoint("c-web", "10.251.0.40", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ep.PolicyRevision != 0 {
		t.Fatalf("policy revision %d before any import", ep.PolicyRevision)
	}
	reports := func(a *agent, rev uint64) {
		t.Helper()
		eventually(t, fmt.Sprintf("endpoint to report policy revision %d", rev), func() bool {
			ep, err := a.c.GetEndpoint(ctx(t), "container-id:c-web")
			return err == nil && ep.State == models.StateReady && ep.PolicyRevision == rev
		})
	}
	for _, doc := range []string{
		`{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}], "labels": ["policy=a"]}`,
		`{"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}], "labels": ["policy=b"]}`,
	} {
		if err := a.c.DoRaw(ctx(t), "PUT", "/v1/policy", "application/json", []byte(doc), nil); err != nil {
			t.Fatal(err)
		}
	}
	reports(a, 2)
	if err := a.c.Do(ctx(t), "DELETE", "/v1/policy", map[string]any{"labels": []string{"policy=b"}}, nil); err != nil {
		t.Fatal(err)
	}
	reports(a, 3)

	a.stop()
	a = startAgent(t, stateDir, bpfRoot, agentOpts{})
	reports(a, 3)
}
