package containerd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// recorder installs membrane-cni-recorder into the env's CNI bin dir: it
// records each call containerd makes (environment, stdin, exit code) into
// a file and hands the call to the real membrane-cni.
func recorder(e *env) (pluginType, record string) {
	self, err := os.Executable()
	if err != nil {
		e.tb.Fatal(err)
	}
	record = filepath.Join(e.Dir, "cni-calls.jsonl")
	script := fmt.Sprintf("#!/bin/sh\nexport %s=cni-record MEMBRANE_CTRD_RECORD=%s MEMBRANE_CTRD_PLUGIN=%s\nexec %s\n",
		e2eutil.ToolEnv, record, filepath.Join(e.BinDir, "membrane-cni"), self)
	if err := os.WriteFile(filepath.Join(e.BinDir, "membrane-cni-recorder"), []byte(script), 0o755); err != nil {
		e.tb.Fatal(err)
	}
	return "membrane-cni-recorder", record
}

func readCalls(t *testing.T, path, containerID string) []cniCall {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no CNI call was recorded: %v", err)
	}
	defer f.Close()
	var calls []cniCall
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c cniCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("recorded call: %v: %s", err, sc.Text())
		}
		if c.ContainerID == containerID {
			calls = append(calls, c)
		}
	}
	return calls
}

// TestWhatContainerdSends records every plugin call containerd makes for
// one sandbox whose network asks for everything containerd can pass
// (capabilities portMappings, dns, bandwidth and the pod annotations), and
// checks that membrane-cni takes all of it: capitalised runtimeConfig
// keys, CNI_ARGS in containerd's order with its extra keys, an ADD, a DEL
// with the netns (StopPodSandbox) and a DEL without (RemovePodSandbox).
func TestWhatContainerdSends(t *testing.T) {
	var record string
	e := newEnv(t, envOpts{Handlers: func(e *env) map[string][]byte {
		var typ string
		typ, record = recorder(e)
		conf, _ := json.Marshal(map[string]any{
			"cniVersion": "1.0.0",
			"name":       "membrane-recorded",
			"plugins": []any{map[string]any{
				"type": typ, "socket": e.AgentSocket, "mtu": 1500,
				"capabilities": map[string]bool{
					"portMappings": true, "dns": true, "bandwidth": true,
					"io.kubernetes.cri.pod-annotations": true,
				},
			}},
		})
		return map[string][]byte{"recorded": conf}
	}})

	p := e.newPod("shop", "web", map[string]string{"app": "web"})
	p.Handler = "recorded"
	p.Extra = func(c *runtimeapi.PodSandboxConfig) {
		c.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 18080}}
		c.Annotations["kubernetes.io/ingress-bandwidth"] = "10M"
		c.Annotations["example.com/owner"] = "team-shop"
	}
	e.mustRun(p)
	e.checkSandbox(t, p)
	if err := e.stop(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	if err := e.remove(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, p)

	calls := readCalls(t, record, p.ID)
	var seq []string
	for _, c := range calls {
		seq = append(seq, fmt.Sprintf("%s(netns=%q)=%d", c.Command, c.Netns, c.ExitCode))
	}
	t.Logf("containerd's calls for sandbox %s: %s", p.ID, strings.Join(seq, ", "))
	if len(calls) < 3 {
		t.Fatalf("want ADD, DEL with netns, DEL without; got %s", strings.Join(seq, ", "))
	}
	for _, c := range calls {
		if c.ExitCode != 0 {
			t.Errorf("membrane-cni %s (netns %q) failed (exit %d) on what containerd sent", c.Command, c.Netns, c.ExitCode)
		}
	}
	add := calls[0]
	if add.Command != "ADD" || add.Netns != p.Netns || add.IfName != "eth0" {
		t.Errorf("first call %s netns=%q ifname=%q, want ADD in %s on eth0", add.Command, add.Netns, add.IfName, p.Netns)
	}
	if last := calls[len(calls)-1]; last.Command != "DEL" || last.Netns != "" {
		t.Errorf("RemovePodSandbox's call: %s with netns %q, want DEL with an empty netns", last.Command, last.Netns)
	}
	delWithNetns := false
	for _, c := range calls[1:] {
		delWithNetns = delWithNetns || (c.Command == "DEL" && c.Netns == p.Netns)
	}
	if !delWithNetns {
		t.Errorf("StopPodSandbox sent no DEL with the netns: %s", strings.Join(seq, ", "))
	}

	// CNI_ARGS: the pod's keys among containerd's own, in its order.
	t.Logf("CNI_ARGS as containerd sends them: %s", add.Args)
	args := map[string]string{}
	for _, kv := range strings.Split(add.Args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		args[k] = v
	}
	for k, want := range map[string]string{
		"K8S_POD_NAMESPACE": p.Namespace, "K8S_POD_NAME": p.Name, "K8S_POD_UID": p.UID,
		"K8S_POD_INFRA_CONTAINER_ID": p.ID, "IgnoreUnknown": "1",
	} {
		if args[k] != want {
			t.Errorf("CNI_ARGS %s=%q, want %q (all: %s)", k, args[k], want, add.Args)
		}
	}

	// runtimeConfig: containerd's capitalised keys and the pod's annotations.
	var stdin struct {
		RuntimeConfig map[string]json.RawMessage `json:"runtimeConfig"`
	}
	if err := json.Unmarshal(add.Stdin, &stdin); err != nil {
		t.Fatalf("ADD's stdin: %v: %s", err, add.Stdin)
	}
	rc, _ := json.Marshal(stdin.RuntimeConfig)
	t.Logf("runtimeConfig as containerd sends it: %s", rc)
	for key, want := range map[string]string{
		"portMappings":                      `"HostPort":18080`,
		"dns":                               `"Servers":["10.96.0.10"]`,
		"bandwidth":                         `"IngressRate"`,
		"io.kubernetes.cri.pod-annotations": `"example.com/owner":"team-shop"`,
	} {
		if got := string(stdin.RuntimeConfig[key]); !strings.Contains(got, want) {
			t.Errorf("runtimeConfig[%q] = %s, want it to contain %s", key, got, want)
		}
	}
}
