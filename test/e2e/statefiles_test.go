package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A torn state file (here: truncated while the agent is stopped) stops the
// agent at start with a message naming the file, for every state file
// alike: starting over it would overwrite the file with what little could
// be read and drop the pods' endpoints while reporting healthy. The pods
// keep their traffic meanwhile (the datapath is pinned), and once the
// file is put back the agent restores everything.
func TestTornStateFileRefusesStart(t *testing.T) {
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
	if err := ping(web, db.IP().String()); err != nil {
		t.Fatal(err)
	}
	a.Stop()

	for _, name := range []string{"endpoints.json", "ipam.json", "identities.json", "pods.json"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(a.StateDir, name)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("the agent did not write %s: %v", name, err)
			}
			// Put the file back whatever happens, so the next case and
			// the final restart see only their own damage.
			defer func() {
				if err := os.WriteFile(path, orig, 0o600); err != nil {
					t.Fatal(err)
				}
			}()
			if err := os.WriteFile(path, orig[:len(orig)/2], 0o600); err != nil {
				t.Fatal(err)
			}
			err = a.Start()
			if err == nil {
				a.Stop()
				t.Fatalf("the agent started over a truncated %s", name)
			}
			if want := "state file " + path + " is corrupt"; !strings.Contains(err.Error(), want) {
				t.Errorf("start over a truncated %s: the error does not say %q:\n%v", name, want, err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(orig[:len(orig)/2]) {
				t.Errorf("the refused start rewrote %s", name)
			}
			if err := ping(web, db.IP().String()); err != nil {
				t.Errorf("traffic between the pods stopped while the agent refused to start: %v", err)
			}
		})
	}

	a.Restart()
	if eps := a.Endpoints(); len(eps) != 2 {
		t.Fatalf("endpoints after the files were put back: %d, want 2", len(eps))
	}
	for _, p := range []*pod{web, db} {
		if err := n.check(p); err != nil {
			t.Error(err)
		}
	}
	if err := ping(web, db.IP().String()); err != nil {
		t.Error(err)
	}
}

// A lost bpffs (the pins removed while the agent is stopped: an unmount,
// a reboot of the mount, a careless rm) costs nothing once the agent is
// back: it loads the datapath afresh, fills the maps from its tables and
// attaches the new programs to the pods' veths, so the policy is enforced
// as before.
func TestLostBPFRootRebuilt(t *testing.T) {
	for _, mode := range []string{"tc", "tcx"} {
		t.Run(mode, func(t *testing.T) {
			e := setupPolicyEnv(t, mode, false)
			web := e.ip(e.web)
			e.importPolicy(`[{"endpointSelector":{"matchLabels":{"app":"web"}},
			  "ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],
			              "toPorts":[{"ports":[{"port":"8080","protocol":"TCP"}]}]}]}]`)
			facts := func(when string) []fact {
				return []fact{
					tcpFact("client->web:8080 "+when, e.client, web, "8080", true),
					tcpFact("client->web:8085 "+when, e.client, web, "8085", false),
					tcpFact("other->web:8080 "+when, e.other, web, "8080", false),
				}
			}
			e.expect(facts("before")...)

			var rev uint64
			for _, ep := range e.a.Endpoints() {
				rev = max(rev, ep.PolicyRevision)
			}
			e.a.Stop()
			entries, err := os.ReadDir(e.a.BPFRoot)
			if err != nil {
				t.Fatal(err)
			}
			for _, ent := range entries {
				if err := os.RemoveAll(filepath.Join(e.a.BPFRoot, ent.Name())); err != nil {
					t.Fatal(err)
				}
			}
			e.a.Restart()
			e.waitRevision(rev)
			e.expect(facts("after the bpffs was lost")...)
			for _, p := range []*pod{e.web, e.client, e.other} {
				if err := e.n.check(p); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
