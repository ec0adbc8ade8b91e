package plugin

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-net/membrane/api/models"
)

// What podman 4.3 (CNI backend) sends, as recorded on a real podman: a
// 1.0.0 configuration with the network's name, CNI_ARGS
// "IgnoreUnknown=1;K8S_POD_NAME=<container name>" (no namespace: the pod
// is default/<name>), a /run/netns/netns-<uuid> netns; then a DEL from a
// separate process (`podman container cleanup`, run by conmon when the
// container exits) whose configuration carries the cached ADD result as
// prevResult, possibly once the netns is gone. It never sends CHECK.
// test/podman runs the real podman; this pins the contract down.
func TestPodmanSequence(t *testing.T) {
	e := newEnv(t, agentOpts{})
	podNS := newNetns(t)
	e.putPod("default", "web") // podman's pods are registered as default/<name>
	conf := fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"membrane","socket":%q,"type":"membrane-cni"}`, e.agent.Socket)
	cid := "6966cfefb4ba5ad3e6477d4eb45b95246fe8965400c2e22c597502ead71f49e7"
	add := &skel.CmdArgs{ContainerID: cid, Netns: podNS, IfName: "eth0", Args: "IgnoreUnknown=1;K8S_POD_NAME=web", StdinData: conf}
	res, err := e.add(add)
	if err != nil {
		t.Fatalf("ADD as podman sends it: %v", err)
	}
	att := attachment(add)
	ep := e.endpoint(att)
	if ep == nil || ep.State != models.StateReady || ep.K8sNamespace != "default" || ep.K8sPodName != "web" {
		t.Fatalf("endpoint %+v, want a ready one of pod default/web", ep)
	}

	// The cleanup process: prevResult in the configuration, netns gone.
	var withPrev map[string]any
	json.Unmarshal(conf, &withPrev)
	raw, _ := json.Marshal(res)
	var prev map[string]any
	json.Unmarshal(raw, &prev)
	withPrev["prevResult"] = prev
	del := *add
	del.StdinData, _ = json.Marshal(withPrev)
	exec.Command("ip", "netns", "del", nsName(podNS)).Run()
	if err := e.del(&del); err != nil {
		t.Fatalf("DEL with prevResult and the netns gone: %v", err)
	}
	e.requireClean(add)
	e.requireAgentHolds(0, 0)
	// podman may tear down twice (the command that stopped the container
	// and the cleanup process): the second DEL finds nothing and succeeds.
	if err := e.del(&del); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}
