package plugin

import (
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/clip"
)

// maxErr bounds an error message about fuzzed input: the input is clipped
// (internal/clip), never echoed whole.
const maxErr = 4*clip.Max + 300

// The network configuration comes from a file anyone with write access to
// the CNI conf dir edits, through the runtime: any bytes give a config or
// an error, never a panic, and the error does not echo the input.
func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"membrane","type":"membrane-cni","socket":"/var/run/membrane/membrane.sock","mtu":1500}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"n","type":"membrane-cni","prevResult":{"interfaces":[]},"runtimeConfig":{"PortMappings":[]}}`))
	f.Add([]byte(`{"name":"n","socket":"relative.sock"}`))
	f.Add([]byte(`{"name":"n","mtu":10}`))
	f.Add([]byte(`{"name":"` + strings.Repeat("x", 10000) + `","socket":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := LoadConf(data)
		if err != nil {
			if len(err.Error()) > maxErr+len(data)/1000 && len(err.Error()) > maxErr {
				t.Fatalf("error of %d bytes for %d bytes of input: %.200s", len(err.Error()), len(data), err)
			}
			return
		}
		if conf.Socket == "" || conf.Socket[0] != '/' {
			t.Fatalf("accepted a config with socket %q", conf.Socket)
		}
		if m := conf.mtu(); m < MinMTU || m > MaxMTU {
			t.Fatalf("accepted mtu %d", m)
		}
	})
}

// CNI_ARGS is a string the runtime builds from the pod: any string gives
// the pod's keys or an error, the keys are what the string says, and the
// error does not echo a long pair.
func FuzzParseArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=123")
	f.Add("K8S_POD_NAME=web")
	f.Add("K8S_POD_NAME")
	f.Add(";;=;")
	f.Add(strings.Repeat("k", 10000))
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(s)
		if err != nil {
			if len(err.Error()) > maxErr {
				t.Fatalf("error of %d bytes: %.200s", len(err.Error()), err)
			}
			return
		}
		if a.Name == "" && (a.Namespace != "" || a.UID != "") {
			t.Fatalf("keys without a pod name: %+v", a)
		}
		if a.Name != "" {
			if a.Namespace == "" {
				t.Fatalf("pod %q without a namespace", a.Name)
			}
			if !strings.Contains(s, "K8S_POD_NAME="+a.Name) {
				t.Fatalf("name %q is not in %q", a.Name, s)
			}
		}
	})
}
