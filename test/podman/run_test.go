package podman

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// `podman run --network membrane` for containers whose labels were
// registered first: addresses, identities, traffic, policy, removal.
func TestPodmanRun(t *testing.T) {
	setup(t)
	a := startAgent(t)
	p := newPodman(t, a)

	a.label("web", "app=web")
	a.label("client", "app=client")
	a.label("client2", "app=client")
	a.label("other", "app=other")
	start := time.Now()
	web := p.mustRun("web")
	client := p.mustRun("client")
	client2 := p.mustRun("client2")
	other := p.mustRun("other")
	t.Logf("4 × podman run: %s", time.Since(start).Round(time.Millisecond))

	epWeb := assertReady(t, a, p, web, "web", "k8s:app=web")
	epClient := assertReady(t, a, p, client, "client", "k8s:app=client")
	epClient2 := assertReady(t, a, p, client2, "client2", "k8s:app=client")
	epOther := assertReady(t, a, p, other, "other", "k8s:app=other")
	if t.Failed() {
		t.FailNow()
	}
	if epClient.Identity.ID != epClient2.Identity.ID {
		t.Errorf("client and client2 have the same labels but identities %d and %d", epClient.Identity.ID, epClient2.Identity.ID)
	}
	if n := a.Identities()[epClient.Identity.ID]; n != 2 {
		t.Errorf("identity %d is used by %d endpoints, want 2 (client, client2)", epClient.Identity.ID, n)
	}
	ids := map[uint32]string{}
	for _, ep := range []*models.Endpoint{epWeb, epClient, epOther} {
		if prev, dup := ids[ep.Identity.ID]; dup {
			t.Errorf("pods %s and %s have different labels but share identity %d", prev, ep.K8sPodName, ep.Identity.ID)
		}
		ids[ep.Identity.ID] = ep.K8sPodName
	}
	addrs := map[netip.Addr]string{}
	for _, c := range []*container{web, client, client2, other} {
		if prev, dup := addrs[c.IP]; dup {
			t.Errorf("containers %s and %s both have %s", prev, c.Name, c.IP)
		}
		addrs[c.IP] = c.Name
	}

	t.Run("ping", func(t *testing.T) {
		for _, c := range []struct{ from, to *container }{{client, web}, {web, client}, {other, client2}} {
			if !canPing(p, c.from, c.to.IP) {
				t.Errorf("%s cannot ping %s (%s)", c.from.Name, c.to.Name, c.to.IP)
			}
		}
		if !canPing(p, web, a.PodCIDR.Addr().Next()) {
			t.Errorf("web cannot ping its gateway %s", a.PodCIDR.Addr().Next())
		}
	})

	startServer(t, p, web, "8080", "8081")
	t.Run("L4 policy", func(t *testing.T) {
		type fact struct {
			what string
			got  func() bool
			want bool
		}
		expect := func(facts ...fact) {
			t.Helper()
			for _, f := range facts {
				if got := f.got(); got != f.want {
					verb := "passed"
					if !got {
						verb = "was dropped"
					}
					t.Errorf("%s %s, want the opposite", f.what, verb)
				}
			}
		}
		tcp := func(what string, from *container, port string, want bool) fact {
			return fact{"TCP " + what, func() bool { return canTCP(p, from, web.IP, port) }, want}
		}
		// Without policy everything passes: what is dropped below is
		// dropped by the policy.
		expect(
			tcp("other->web:8080 (no policy)", other, "8080", true),
			tcp("client->web:8081 (no policy)", client, "8081", true),
		)
		a.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
		  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
		              "toPorts":[{"ports":[{"port":"8080","protocol":"TCP"}]}]}]}]`)
		expect(
			tcp("client->web:8080 (allowed)", client, "8080", true),
			tcp("client2->web:8080 (same identity as client)", client2, "8080", true),
			tcp("client->web:8081 (port not allowed)", client, "8081", false),
			tcp("other->web:8080 (identity not allowed)", other, "8080", false),
			fact{"ICMP client->web (not allowed)", func() bool { return canPing(p, client, web.IP) }, false},
			fact{"ICMP web->client (client's ingress not enforced)", func() bool { return canPing(p, web, client.IP) }, true},
		)
		a.deletePolicy()
		expect(tcp("other->web:8080 (policy deleted)", other, "8080", true))
	})

	// podman rm -f: everything of each container goes, identities last.
	for _, c := range []*container{web, client} {
		p.must("rm", "-f", "-t", "0", c.Name)
		assertGone(t, a, c)
	}
	if n := a.Identities()[epClient.Identity.ID]; n != 1 {
		t.Errorf("identity %d is used by %d endpoints after client's removal, want 1 (client2)", epClient.Identity.ID, n)
	}
	e2eutil.Eventually(t, 10*time.Second, "web's identity to be released after its removal", func() error {
		if _, held := a.Identities()[epWeb.Identity.ID]; held {
			return fmt.Errorf("identity %d of web is still held after web's removal", epWeb.Identity.ID)
		}
		return nil
	})
	p.must("rm", "-f", "-t", "0", client2.Name, other.Name)
	assertGone(t, a, client2)
	assertGone(t, a, other)
	assertNoIdentities(t, a)
	if out := strings.TrimSpace(p.must("ps", "-a", "-q")); out != "" {
		t.Errorf("podman still lists containers: %s", out)
	}
}

// A container that stops by itself is torn down by podman's cleanup
// process (a DEL with the cached prevResult, after `podman run` is long
// gone); starting it again is a fresh ADD for the same container ID, and
// so is each half of `podman restart`.
func TestPodmanExitAndRestart(t *testing.T) {
	setup(t)
	a := startAgent(t)
	p := newPodman(t, a)
	a.label("job", "app=job")

	// The container runs until /tmp/stop exists, and removes it on its
	// way out so that it runs again when started again.
	c := p.mustRun("job", "sh", "-c", "while [ ! -e /tmp/stop ]; do sleep 1; done; rm /tmp/stop")
	first := assertReady(t, a, p, c, "job", "k8s:app=job")
	if _, err := p.exec(c, "touch", "/tmp/stop"); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, 20*time.Second, "job to exit", func() error {
		if s := p.inspect("job").Status; s != "exited" {
			return fmt.Errorf("status %s", s)
		}
		return nil
	})
	assertGone(t, a, c)
	assertNoIdentities(t, a)

	p.must("start", "job")
	c2 := p.inspect("job")
	if c2.ID != c.ID {
		t.Fatalf("podman start gave the container a new ID %s (was %s)", c2.ID, c.ID)
	}
	if c2.Netns == c.Netns {
		t.Errorf("the restarted container kept netns %s", c.Netns)
	}
	second := assertReady(t, a, p, c2, "job", "k8s:app=job")
	if second.ID == first.ID {
		t.Logf("note: the endpoint ID %d was reused", second.ID)
	}

	p.must("restart", "-t", "0", "job")
	c3 := p.inspect("job")
	// Same attachment, new netns: the old one is gone and the agent holds
	// one endpoint and one address for the attachment (assertReady).
	if _, err := os.Stat(c2.Netns); c3.Netns == c2.Netns || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after podman restart the netns is %s, the old one %s still exists (%v)", c3.Netns, c2.Netns, err)
	}
	assertReady(t, a, p, c3, "job", "k8s:app=job")

	p.must("rm", "-f", "-t", "0", "job")
	assertGone(t, a, c3)
	assertNoIdentities(t, a)
}

// A user who starts a container before registering its labels: `podman
// run` fails after --pod-metadata-timeout with a message naming the pod and
// the command to run, leaves nothing behind, and `podman start` works
// once the labels are there. Relabelling a running container moves it to
// the new identity.
func TestPodmanUnlabelledContainer(t *testing.T) {
	setup(t)
	a := startAgent(t, "--pod-metadata-timeout=2s")
	p := newPodman(t, a)

	start := time.Now()
	_, err := p.run("ghost")
	took := time.Since(start)
	if err == nil {
		t.Fatal("podman run of a container whose labels nobody registered succeeded")
	}
	t.Logf("podman run failed after %s:\n%v", took.Round(time.Millisecond), err)
	for _, want := range []string{
		"pod default/ghost is not known to the agent after 2s",
		"membrane pod label default/ghost KEY=VALUE",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("podman's error does not say %q", want)
		}
	}
	c := p.inspect("ghost")
	if c.Status != "created" {
		t.Errorf("ghost is %s, want created", c.Status)
	}
	assertGone(t, a, c)
	assertNoIdentities(t, a)

	a.label("ghost", "app=ghost")
	p.must("start", "ghost")
	c = p.inspect("ghost")
	ep := assertReady(t, a, p, c, "ghost", "k8s:app=ghost")

	if out, err := a.cli("pod", "label", "ghost", "app=phantom", "tier=back"); err != nil {
		t.Fatal(err)
	} else if strings.TrimSpace(out) != "pod default/ghost labelled: app=phantom, tier=back" {
		t.Errorf("membrane pod label printed %q", out)
	}
	e2eutil.Eventually(t, 20*time.Second, "ghost's endpoint to take its new labels", func() error {
		now := a.endpoint(c.ID)
		if now == nil || now.Identity == nil || !slices.Contains(now.Identity.Labels, "k8s:app=phantom") ||
			!slices.Contains(now.Identity.Labels, "k8s:tier=back") {
			return fmt.Errorf("endpoint %+v", now)
		}
		if id := a.IPCache()[netip.PrefixFrom(c.IP, 32)]; id != now.Identity.ID {
			return fmt.Errorf("ipcache has identity %d for %s, the endpoint %d", id, c.IP, now.Identity.ID)
		}
		return nil
	})
	// Releasing the old identity follows the endpoint's move (the allocator
	// sweeps after the endpoint row changed): wait for it, bounded.
	e2eutil.Eventually(t, 10*time.Second, "the old labels' identity to be released", func() error {
		if _, held := a.Identities()[ep.Identity.ID]; held {
			return fmt.Errorf("identity %d of the old labels is still held", ep.Identity.ID)
		}
		return nil
	})

	p.must("rm", "-f", "-t", "0", "ghost")
	assertGone(t, a, c)
	assertNoIdentities(t, a)
}

// A podman pod: its infra container holds the network, and podman names
// the pod (not a container) in K8S_POD_NAME, so every container of pod
// shop has the labels of default/shop.
func TestPodmanPod(t *testing.T) {
	setup(t)
	// podman 4.3 builds the infra container's image from the host's
	// catatonit (no registry needed).
	if _, err := os.Stat("/usr/libexec/podman/catatonit"); err != nil {
		t.Fatalf("podman pods need catatonit (apt-get install catatonit, make deps does): %v", err)
	}
	a := startAgent(t)
	p := newPodman(t, a)
	a.label("shop", "app=shop")
	a.label("shop-web", "app=wrong") // a container's own name does not count in a pod

	p.createPod("shop")
	p.must("run", "-d", "--pull=never", "--pod", "shop", "--name", "shop-web", imageName, "sleep", "3600")
	infraID := strings.TrimSpace(p.must("pod", "inspect", "--format", "{{.InfraContainerID}}", "shop"))
	infra := p.inspect(infraID)
	web := p.inspect("shop-web")
	// The attachment is the infra container's; shop-web, in its network
	// namespace, has its address on eth0.
	assertReady(t, a, p, &container{Name: web.Name, ID: infra.ID, IP: infra.IP, Netns: infra.Netns}, "shop", "k8s:app=shop")
	if ep := a.endpoint(web.ID); ep != nil {
		t.Errorf("container shop-web got an endpoint of its own: %d", ep.ID)
	}

	p.must("pod", "rm", "-f", "-t", "0", "shop")
	assertGone(t, a, infra)
	assertNoIdentities(t, a)
}
