package e2e

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// GC with the runtime's list of valid attachments removes every other
// attachment the agent knows (endpoint, addresses, veth, map entry) and
// leaves the valid one working; cnitool's own gc (which DELs whatever it
// cached, then GCs with no valid attachment) leaves nothing.
func TestGC(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	var pods []*pod
	for _, name := range []string{"keep", "stale-1", "stale-2"} {
		a.putPod("gc", name, map[string]string{"app": name})
		p := newPod(t, "gc", name)
		if err := n.add(p); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	keep := pods[0]
	valid := []types.GCAttachment{{ContainerID: keep.ContainerID, IfName: "eth0"}}
	if _, err := n.runPlugin("GC", "", "", map[string]any{"cni.dev/valid-attachments": valid}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods[1:] {
		assertGone(t, a, p, p.IP())
	}
	if err := n.check(keep); err != nil {
		t.Errorf("GC damaged the valid attachment: %v", err)
	}

	if _, err := n.cnitool("gc", keep, ""); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a, keep, keep.IP())
	if eps := a.Endpoints(); len(eps) != 0 {
		b, _ := json.Marshal(eps)
		t.Errorf("endpoints after cnitool gc: %s", b)
	}
}

// A configuration of an older CNI version gets a result of that version,
// and CHECK and DEL work with it.
func TestOlderCNIVersion(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	for _, v := range []string{"0.4.0", "1.0.0"} {
		n := newNetwork(t, a, v, nil)
		a.putPod("old", "web", map[string]string{"app": "web"})
		p := newPod(t, "old", "web")
		out, err := n.cnitool("add", p, p.Args())
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.CNIVersion != v {
			t.Errorf("cniVersion %s: result says %q (%v): %s", v, res.CNIVersion, err, out)
		}
		if err := n.check(p); err != nil {
			t.Errorf("CHECK %s: %v", v, err)
		}
		if err := n.del(p); err != nil {
			t.Errorf("DEL %s: %v", v, err)
		}
		if ep := a.endpoint(p.Attachment()); ep != nil {
			t.Errorf("%s: endpoint left after DEL", v)
		}
	}
}
