package plugin

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-net/membrane/api/models"
)

// What containerd 1.6's CRI plugin sends, as recorded on a real containerd
// (test/containerd's TestWhatContainerdSends): a 1.0.0 configuration
// (libcni v1.1 ignores "cniVersions"), and, when the plugin declares
// capabilities, runtimeConfig with containerd's capitalised keys and the
// pod's annotations; CNI_ARGS with IgnoreUnknown first and the infra
// container ID among the pod keys; the netns under /var/run/netns/cni-*.
// StopPodSandbox sends DEL with the netns, RemovePodSandbox a second DEL
// with an empty one. test/containerd runs the real containerd; this pins
// the contract down.
func TestContainerdSequence(t *testing.T) {
	e := newEnv(t, agentOpts{})
	podNS := newNetns(t)
	e.putPod("shop", "web") // as the kubelet's pod watcher would have
	cid := "e6d509698e3da9cc57c47ed97482cc7fcbd1318400fe27e4c0c9f0c27b786a7b"
	conf := fmt.Appendf(nil, `{"capabilities":{"bandwidth":true,"dns":true,"io.kubernetes.cri.pod-annotations":true,"portMappings":true},
		"cniVersion":"1.0.0","mtu":1500,"name":"membrane","socket":%q,"type":"membrane-cni",
		"runtimeConfig":{"bandwidth":{"IngressRate":10000000,"IngressBurst":4294967295,"EgressRate":0,"EgressBurst":0},
		"dns":{"Servers":["10.96.0.10"],"Searches":["shop.svc.cluster.local","svc.cluster.local","cluster.local"],"Options":["ndots:5"]},
		"io.kubernetes.cri.pod-annotations":{"example.com/owner":"team-shop","kubernetes.io/config.source":"api"},
		"portMappings":[{"HostPort":18080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]}}`, e.agent.Socket)
	cniArgs := "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=" + cid +
		";K8S_POD_UID=352c22a2-ed99-4abb-92b5-7e1c62e74f92"
	add := &skel.CmdArgs{ContainerID: cid, Netns: podNS, IfName: "eth0", Args: cniArgs, StdinData: conf}
	res, err := e.add(add)
	if err != nil {
		t.Fatalf("ADD as containerd sends it: %v", err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("ADD result has %d addresses, want 1", len(res.IPs))
	}
	att := attachment(add)
	ep := e.endpoint(att)
	if ep == nil || ep.State != models.StateReady || ep.K8sNamespace != "shop" || ep.K8sPodName != "web" || ep.K8sUID != "352c22a2-ed99-4abb-92b5-7e1c62e74f92" {
		t.Fatalf("endpoint %+v, want a ready one of pod shop/web with its uid", ep)
	}

	// StopPodSandbox: DEL with the netns.
	if err := e.del(add); err != nil {
		t.Fatalf("StopPodSandbox's DEL: %v", err)
	}
	e.requireClean(add)
	e.requireAgentHolds(0, 0)
	// RemovePodSandbox: DEL again, without a netns; nothing is left to do.
	remove := *add
	remove.Netns = ""
	if err := e.del(&remove); err != nil {
		t.Errorf("RemovePodSandbox's DEL (empty netns): %v", err)
	}
}
