package plugin

import (
	"strings"
	"testing"
)

func TestLoadConfDefaults(t *testing.T) {
	conf, err := LoadConf([]byte(`{"cniVersion":"1.1.0","name":"membrane","type":"membrane-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Socket != DefaultSocket || conf.StateDir != DefaultStateDir || conf.mtu() != DefaultMTU {
		t.Fatalf("defaults: socket %q stateDir %q mtu %d", conf.Socket, conf.StateDir, conf.mtu())
	}
}

// What runtimes really send must be accepted: containerd's runtimeConfig
// with capitalised keys, capabilities, a prevResult, args, and keys this
// plugin has never heard of.
func TestLoadConfToleratesRuntimeFields(t *testing.T) {
	in := `{"cniVersion":"1.0.0","name":"membrane","type":"membrane-cni","socket":"/run/m.sock","mtu":9000,
	  "capabilities":{"portMappings":true,"io.kubernetes.cri.pod-annotations":true},
	  "runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}],
	    "dns":{"Servers":["10.96.0.10"],"Searches":["svc"]},
	    "io.kubernetes.cri.pod-annotations":{"a":"b"}},
	  "args":{"cni":{"labels":["x"]}},
	  "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[]},
	  "somethingNew":{"nested":[1,2,3]}}`
	conf, err := LoadConf([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Socket != "/run/m.sock" || conf.mtu() != 9000 {
		t.Fatalf("socket %q mtu %d", conf.Socket, conf.mtu())
	}
}

func TestLoadConfRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"name":"n","mtu":10}`, `"mtu" 10 is out of range 68..65535`},
		{`{"name":"n","mtu":0}`, `"mtu" 0 is out of range`},
		{`{"name":"n","mtu":70000}`, `"mtu" 70000 is out of range`},
		{`{"name":"n","mtu":"big"}`, `invalid network configuration`},
		{`{"name":"n","socket":"agent.sock"}`, `"socket" must be an absolute path`},
		{`{"name":"n","stateDir":"state"}`, `"stateDir" must be an absolute path`},
		{`{"name":`, `invalid network configuration`},
	} {
		_, err := LoadConf([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadConf(%s) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PodArgs
	}{
		// containerd: all keys, any order, extra keys.
		{"K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop;K8S_POD_UID=u1;K8S_POD_INFRA_CONTAINER_ID=abc;IgnoreUnknown=1",
			PodArgs{Namespace: "shop", Name: "web", UID: "u1"}},
		{"IgnoreUnknown=1;K8S_POD_UID=u1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
			PodArgs{Namespace: "shop", Name: "web", UID: "u1"}},
		// podman: only the name.
		{"K8S_POD_NAME=nginx", PodArgs{Namespace: "default", Name: "nginx"}},
		// no pod: no reference at all.
		{"", PodArgs{}},
		{"K8S_POD_NAMESPACE=shop;K8S_POD_UID=u1", PodArgs{}},
		{"FOO=bar;;", PodArgs{}},
	} {
		got, err := ParseArgs(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParseArgs("K8S_POD_NAME"); err == nil || !strings.Contains(err.Error(), "KEY=VALUE") {
		t.Errorf("a pair without '=' should be refused, got %v", err)
	}
	if got := (PodArgs{Namespace: "a", Name: "b"}).Ref(); got != "a/b" {
		t.Errorf("Ref = %q", got)
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("cnitool-0123456789abcdef0123", "eth0")
	if len(a) != 15 || !strings.HasPrefix(a, HostVethPrefix) {
		t.Fatalf("HostVethName = %q: want 15 characters starting with %q", a, HostVethPrefix)
	}
	if b := HostVethName("cnitool-0123456789abcdef0123", "eth0"); a != b {
		t.Fatalf("not deterministic: %q vs %q", a, b)
	}
	if b := HostVethName("cnitool-0123456789abcdef0123", "eth1"); a == b {
		t.Fatalf("eth0 and eth1 share %q", a)
	}
	att := Attachment{ContainerID: "cnitool-0123456789abcdef0123", IfName: "eth0"}
	if att.HostVeth() != a || att.Owner() != "cnitool-0123456789abcdef0123:eth0" ||
		att.EndpointID() != "cni-attachment-id:cnitool-0123456789abcdef0123:eth0" {
		t.Fatalf("attachment names: %q %q %q", att.HostVeth(), att.Owner(), att.EndpointID())
	}
}

func TestParseOwner(t *testing.T) {
	for in, want := range map[string]Attachment{
		"abc:eth0":   {ContainerID: "abc", IfName: "eth0"},
		"a:b:c:net1": {ContainerID: "a:b:c", IfName: "net1"},
	} {
		if got, ok := ParseOwner(in); !ok || got != want {
			t.Errorf("ParseOwner(%q) = %+v %v", in, got, ok)
		}
	}
	for _, in := range []string{"default/web", "abc", ":eth0", "abc:", ""} {
		if _, ok := ParseOwner(in); ok {
			t.Errorf("ParseOwner(%q) accepted", in)
		}
	}
}
