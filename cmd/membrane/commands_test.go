package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/models"
)

// Two endpoints in the agent's wire format, deliberately out of ID order.
const endpointsJSON = `[
 {"id": 3012, "state": "waiting-for-identity", "container-id": "c0ffee00112233445566", "container-interface-name": "eth0",
  "interface-name": "mb1f2e3d4c5b", "interface-index": 41, "k8s-namespace": "shop", "k8s-pod-name": "cart",
  "labels": null, "addressing": {"ipv4": "10.200.0.9"}, "policy-revision": 0, "created": "2025-01-02T03:04:05Z"},
 {"id": 17, "state": "ready", "container-id": "abcdef0123456789abcdef", "container-interface-name": "eth0",
  "interface-name": "mb0a1b2c3d4e", "interface-index": 40, "mac": "02:00:00:00:00:11", "host-mac": "02:00:00:00:00:12",
  "k8s-namespace": "default", "k8s-pod-name": "web", "k8s-uid": "uid-1",
  "labels": ["k8s:io.kubernetes.pod.namespace=default", "k8s:app=web"],
  "identity": {"id": 256, "labels": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]},
  "addressing": {"ipv4": "10.200.0.7", "ipv6": "fd00::7"}, "policy-revision": 3, "created": "2025-01-02T03:04:00Z",
  "status": [
   {"timestamp": "2025-01-02T03:04:01Z", "state": "waiting-to-regenerate", "code": "ok", "message": "identity 256 resolved"},
   {"timestamp": "2025-01-02T03:04:00Z", "state": "waiting-for-identity", "code": "ok", "message": "endpoint created"},
   {"timestamp": "2025-01-02T03:04:02Z", "state": "ready", "code": "ok", "message": "regenerated\nipcache and endpoint map"}
  ]}
]`

func TestEndpointList(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/endpoint", 200, endpointsJSON)

	header := "ID     STATE                  IDENTITY   POD           CONTAINER           INTERFACE      IPV4         IPV6      LABELS"
	wantLines(t, ok(t, f.args("endpoint", "list")...),
		header,
		"17     ready                  256        default/web   abcdef012345:eth0   mb0a1b2c3d4e   10.200.0.7   fd00::7   k8s:app=web",
		strings.Repeat(" ", strings.Index(header, "LABELS"))+"k8s:io.kubernetes.pod.namespace=default",
		"3012   waiting-for-identity   -          shop/cart     c0ffee001122:eth0   mb1f2e3d4c5b   10.200.0.9   -         -",
	)
}

func TestEndpointListJSON(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/endpoint", 200, endpointsJSON)

	out := ok(t, f.args("endpoint", "list", "-o", "json")...)
	var generic []map[string]any
	mustJSON(t, out, &generic)
	if len(generic) != 2 {
		t.Fatalf("want 2 endpoints, got %d", len(generic))
	}
	// The keys scripts rely on, for a ready endpoint with a pod.
	for _, k := range []string{"id", "state", "container-id", "interface-name", "k8s-namespace", "k8s-pod-name", "labels", "identity", "addressing"} {
		if _, ok := generic[0][k]; !ok {
			t.Errorf("endpoint %v has no key %q", generic[0]["id"], k)
		}
	}
	if id := generic[0]["identity"].(map[string]any); id["id"] != 256.0 || len(id["labels"].([]any)) != 2 {
		t.Errorf("identity = %v", id)
	}
	if a := generic[0]["addressing"].(map[string]any); a["ipv4"] != "10.200.0.7" || a["ipv6"] != "fd00::7" {
		t.Errorf("addressing = %v", a)
	}
	// Sorted by ID; labels never null.
	if generic[0]["id"] != 17.0 || generic[1]["id"] != 3012.0 {
		t.Errorf("not sorted by id: %v, %v", generic[0]["id"], generic[1]["id"])
	}
	if l, ok := generic[1]["labels"].([]any); !ok || len(l) != 0 {
		t.Errorf("labels of endpoint 3012 = %#v, want []", generic[1]["labels"])
	}

	var eps []models.Endpoint
	mustJSON(t, out, &eps)
	if eps[0].K8sPodName != "web" || len(eps[0].Status) != 3 || eps[1].Identity != nil {
		t.Errorf("decoded %+v", eps)
	}
}

func TestEndpointListYAML(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/endpoint", 200, endpointsJSON)

	out := ok(t, f.args("endpoint", "list", "-o", "yaml")...)
	if !strings.Contains(out, "container-id: abcdef0123456789abcdef") || !strings.Contains(out, "k8s-pod-name: web") {
		t.Fatalf("YAML lacks the kebab-case keys:\n%s", out)
	}
	var eps []models.Endpoint
	if err := yaml.Unmarshal([]byte(out), &eps); err != nil || len(eps) != 2 || eps[0].ID != 17 {
		t.Fatalf("YAML does not read back (%v): %+v", err, eps)
	}
}

func TestEndpointListEmpty(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/endpoint", 200, `[]`)
	wantLines(t, ok(t, f.args("endpoint", "list")...),
		"ID   STATE   IDENTITY   POD   CONTAINER   INTERFACE   IPV4   IPV6   LABELS")
	wantLines(t, ok(t, f.args("endpoint", "list", "-o", "json")...), "[]")
}

func TestEndpointGet(t *testing.T) {
	f := newFakeAgent(t)
	var ep17 json.RawMessage
	var all []json.RawMessage
	mustJSON(t, endpointsJSON, &all)
	ep17 = all[1]
	f.handle("GET /v1/endpoint/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "pod-name:default/web" {
			answer(w, 404, `{"code":404,"message":"no endpoint `+r.PathValue("id")+`"}`)
			return
		}
		answer(w, 200, string(ep17))
	})

	wantLines(t, ok(t, f.args("endpoint", "get", "pod-name:default/web")...),
		"ID:                    17",
		"State:                 ready",
		"Container ID:          abcdef0123456789abcdef",
		"Container interface:   eth0",
		"Host interface:        mb0a1b2c3d4e (ifindex 40)",
		"MAC:                   02:00:00:00:00:11",
		"Host MAC:              02:00:00:00:00:12",
		"Pod:                   default/web",
		"Pod UID:               uid-1",
		"IPv4:                  10.200.0.7",
		"IPv6:                  fd00::7",
		"Labels:                k8s:app=web",
		"                       k8s:io.kubernetes.pod.namespace=default",
		"Identity:              256",
		"Identity labels:       k8s:app=web",
		"                       k8s:io.kubernetes.pod.namespace=default",
		"Policy revision:       3",
		"Created:               2025-01-02T03:04:00Z",
		"",
		"Status:",
		"TIMESTAMP              STATE                   CODE   MESSAGE",
		"2025-01-02T03:04:00Z   waiting-for-identity    ok     endpoint created",
		"2025-01-02T03:04:01Z   waiting-to-regenerate   ok     identity 256 resolved",
		"2025-01-02T03:04:02Z   ready                   ok     regenerated ipcache and endpoint map",
	)
	// The id travels escaped, as one path segment.
	if got := f.sent()[0].Path; got != "/v1/endpoint/pod-name:default%2Fweb" {
		t.Errorf("request path %q", got)
	}

	errLine := fails(t, f.args("endpoint", "get", "42")...)
	if want := "Error: get endpoint 42: agent: no endpoint 42 (HTTP 404)\n"; errLine != want {
		t.Errorf("stderr %q, want %q", errLine, want)
	}
}

func TestEndpointLog(t *testing.T) {
	f := newFakeAgent(t)
	var all []models.Endpoint
	mustJSON(t, endpointsJSON, &all)
	logJSON, _ := json.Marshal(all[1].Status)
	f.canned("GET /v1/endpoint/17/log", 200, string(logJSON))

	wantLines(t, ok(t, f.args("endpoint", "log", "17")...),
		"TIMESTAMP              STATE                   CODE   MESSAGE",
		"2025-01-02T03:04:00Z   waiting-for-identity    ok     endpoint created",
		"2025-01-02T03:04:01Z   waiting-to-regenerate   ok     identity 256 resolved",
		"2025-01-02T03:04:02Z   ready                   ok     regenerated ipcache and endpoint map",
	)
	var log []models.StatusEntry
	mustJSON(t, ok(t, f.args("endpoint", "log", "17", "-o", "json")...), &log)
	if len(log) != 3 || log[0].Message != "endpoint created" {
		t.Fatalf("log %+v", log)
	}
}

func TestEndpointDelete(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("DELETE /v1/endpoint/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "99" {
			answer(w, 404, `{"code":404,"message":"endpoint 99 not found"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	wantLines(t, ok(t, f.args("endpoint", "delete", "17", "container-id:abc")...),
		"endpoint 17 deleted", "endpoint container-id:abc deleted")

	r := run(t, "", f.args("endpoint", "delete", "18", "99", "20")...)
	if r.code != 1 || r.stdout != "endpoint 18 deleted\n" {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	if !strings.Contains(r.stderr, "delete endpoint 99: agent: endpoint 99 not found (HTTP 404)") {
		t.Errorf("stderr %q", r.stderr)
	}
	var paths []string
	for _, req := range f.sent() {
		paths = append(paths, req.Method+" "+req.Path)
	}
	want := []string{"DELETE /v1/endpoint/17", "DELETE /v1/endpoint/container-id:abc", "DELETE /v1/endpoint/18", "DELETE /v1/endpoint/99"}
	if !slices.Equal(paths, want) {
		t.Errorf("requests %v, want %v (stop at the first failure)", paths, want)
	}
}

func TestEndpointLabels(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/endpoint/17/labels", 200,
		`{"requested": ["container:tier=gold"], "pod": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"], "security": ["k8s:app=web"]}`)
	f.handle("PATCH /v1/endpoint/17/labels", func(w http.ResponseWriter, r *http.Request) {
		var p models.LabelsPatch
		json.NewDecoder(r.Body).Decode(&p)
		answer(w, 200, `{"requested": ["container:tier=silver"], "pod": [], "security": null}`)
	})

	wantLines(t, ok(t, f.args("endpoint", "labels", "17")...),
		"ORIGIN      LABEL",
		"requested   container:tier=gold",
		"pod         k8s:app=web",
		"pod         k8s:io.kubernetes.pod.namespace=default",
		"security    k8s:app=web",
	)
	wantLines(t, ok(t, f.args("endpoint", "labels", "17", "--add", "tier=silver,zone=a", "--add", "k8s:x=y", "--delete", "container:tier=gold")...),
		"ORIGIN      LABEL",
		"requested   container:tier=silver",
		"pod         -",
		"security    -",
	)
	reqs := f.sent()
	last := reqs[len(reqs)-1]
	var p models.LabelsPatch
	mustJSON(t, last.Body, &p)
	if last.Method != http.MethodPatch || !slices.Equal(p.Add, []string{"tier=silver", "zone=a", "k8s:x=y"}) ||
		!slices.Equal(p.Delete, []string{"container:tier=gold"}) {
		t.Fatalf("sent %s %s", last.Method, last.Body)
	}

	var ls models.EndpointLabels
	mustJSON(t, ok(t, f.args("endpoint", "labels", "17", "--add", "a=b", "-o", "json")...), &ls)
	if ls.Security == nil || len(ls.Requested) != 1 {
		t.Fatalf("labels JSON %+v", ls)
	}

	// A malformed label is refused before anything is sent.
	n := len(f.sent())
	errLine := fails(t, f.args("endpoint", "labels", "17", "--add", "app=we b")...)
	if !strings.Contains(errLine, `invalid value "we b"`) || len(f.sent()) != n {
		t.Fatalf("stderr %q, %d requests sent", errLine, len(f.sent())-n)
	}
}

func TestStatus(t *testing.T) {
	f := newFakeAgent(t)
	healthy := true
	f.handle("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) {
		s := models.Status{
			Version: "0.1.0", Uptime: "1m30s", Healthy: healthy,
			Endpoints: map[string]int{"ready": 3, "waiting-for-identity": 1, "mystery": 2},
			Modules:   map[string]string{"identity": "OK", "api-server": "OK: listening", "ipam": "Degraded: pool\nexhausted"},
		}
		if !healthy {
			s.Message = "ipam degraded"
		}
		b, _ := json.Marshal(s)
		answer(w, 200, string(b))
	})
	want := []string{
		"Agent:     healthy",
		"Version:   0.1.0",
		"Uptime:    1m30s",
		"",
		"CELL         HEALTH",
		"api-server   OK: listening",
		"identity     OK",
		"ipam         Degraded: pool exhausted",
		"",
		"ENDPOINT STATE         COUNT",
		"waiting-for-identity   1",
		"ready                  3",
		"mystery                2",
		"total                  6",
	}
	wantLines(t, ok(t, f.args("status")...), want...)

	healthy = false
	r := run(t, "", f.args("status")...)
	if r.code != 1 || !strings.HasPrefix(r.stdout, "Agent:     UNHEALTHY\nMessage:   ipam degraded\n") {
		t.Fatalf("unhealthy agent: exit %d, stdout:\n%s", r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	if r.stderr != "Error: membrane-agent reports itself unhealthy: ipam degraded\n" {
		t.Errorf("stderr %q", r.stderr)
	}

	var s models.Status
	r = run(t, "", f.args("status", "-o", "json")...)
	mustJSON(t, r.stdout, &s)
	if s.Endpoints["ready"] != 3 || s.Healthy {
		t.Errorf("status JSON %+v", s)
	}
}

const identitiesJSON = `[
 {"id": 257, "labels": ["k8s:io.kubernetes.pod.namespace=shop", "k8s:app=cart"], "endpoints": 1},
 {"id": 1, "labels": ["reserved:host"]},
 {"id": 256, "labels": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"], "endpoints": 2}
]`

func TestIdentity(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/identity", 200, identitiesJSON)
	f.handle("GET /v1/identity/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "256" {
			answer(w, 404, `{"code":404,"message":"identity `+r.PathValue("id")+` not found"}`)
			return
		}
		answer(w, 200, `{"id": 256, "labels": ["k8s:io.kubernetes.pod.namespace=default", "k8s:app=web"], "endpoints": 2}`)
	})

	wantLines(t, ok(t, f.args("identity", "list")...),
		"ID    ENDPOINTS   LABELS",
		"1     0           reserved:host",
		"256   2           k8s:app=web",
		"                  k8s:io.kubernetes.pod.namespace=default",
		"257   1           k8s:app=cart",
		"                  k8s:io.kubernetes.pod.namespace=shop",
	)
	wantLines(t, ok(t, f.args("identity", "get", "256")...),
		"ID:          256",
		"Labels:      k8s:app=web",
		"             k8s:io.kubernetes.pod.namespace=default",
		"Endpoints:   2",
	)
	var ids []models.Identity
	mustJSON(t, ok(t, f.args("identity", "list", "-o", "json")...), &ids)
	if len(ids) != 3 || ids[0].ID != 1 || ids[2].ID != 257 {
		t.Errorf("identities JSON %+v", ids)
	}
	if e := fails(t, f.args("identity", "get", "web")...); !strings.Contains(e, `invalid identity "web": want a number`) {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, f.args("identity", "get", "300")...); !strings.Contains(e, "identity 300 not found (HTTP 404)") {
		t.Errorf("stderr %q", e)
	}
}

func TestIPAMList(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/ipam", 200, `[
	 {"ip": "fd00::2", "owner": "c2:eth0", "created": "2025-01-02T03:04:05Z"},
	 {"ip": "10.200.0.10", "owner": "c3:eth0", "pod": "default/db", "created": "2025-01-02T03:04:05Z"},
	 {"ip": "10.200.0.9", "owner": "c1:eth0", "pod": "default/web", "created": "2025-01-02T03:04:05Z"}
	]`)
	wantLines(t, ok(t, f.args("ipam", "list")...),
		"IP            OWNER     POD           CREATED",
		"10.200.0.9    c1:eth0   default/web   2025-01-02T03:04:05Z",
		"10.200.0.10   c3:eth0   default/db    2025-01-02T03:04:05Z",
		"fd00::2       c2:eth0   -             2025-01-02T03:04:05Z",
	)
	var ips []models.IPAMAllocation
	mustJSON(t, ok(t, f.args("ipam", "list", "-o", "json")...), &ips)
	if len(ips) != 3 || ips[0].IP != "10.200.0.9" {
		t.Errorf("ipam JSON %+v", ips)
	}
}

func TestPodListAndDelete(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/pod", 200, `[
	 {"namespace": "shop", "name": "cart", "labels": {"app": "cart"}, "source": "api"},
	 {"namespace": "default", "name": "web", "uid": "u1", "labels": {"tier": "front", "app": "web"}, "source": "manifest:/etc/pods/web.yaml"}
	]`)
	f.handle("DELETE /v1/pod/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })

	wantLines(t, ok(t, f.args("pod", "list")...),
		"NAMESPACE   NAME   UID   LABELS       SOURCE",
		"default     web    u1    app=web      manifest:/etc/pods/web.yaml",
		"                         tier=front",
		"shop        cart   -     app=cart     api",
	)
	wantLines(t, ok(t, f.args("pod", "delete", "default/web", "shop/cart")...), "pod default/web deleted", "pod shop/cart deleted")
	if r := f.sent(); r[1].Method != http.MethodDelete || r[1].Path != "/v1/pod/default/web" || r[2].Path != "/v1/pod/shop/cart" {
		t.Errorf("requests %+v", r)
	}
	for _, bad := range []string{"web", "default/", "/web", "a/b/c"} {
		if e := fails(t, f.args("pod", "delete", bad)...); !strings.Contains(e, "want NAMESPACE/NAME") {
			t.Errorf("pod delete %s: %q", bad, e)
		}
	}
}

func TestPodApply(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("PUT /v1/pod/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var p models.Pod
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.Namespace != r.PathValue("ns") || p.Name != r.PathValue("name") {
			answer(w, 400, `{"code":400,"message":"body does not match the path"}`)
			return
		}
		if p.Name == "refused" {
			answer(w, 400, `{"code":400,"message":"label \"k8s:x\" refused"}`)
			return
		}
		p.Source = "api"
		b, _ := json.Marshal(p)
		answer(w, 200, string(b))
	})

	wantLines(t, ok(t, f.args("pod", "apply", "-f", "testdata/pods.yaml")...),
		"pod default/web applied",
		"pod storage/db applied",
		"pod default/cache applied",
	)
	var sent []models.Pod
	for _, r := range f.sent() {
		if r.Method != http.MethodPut {
			t.Fatalf("unexpected %s %s", r.Method, r.Path)
		}
		var p models.Pod
		mustJSON(t, r.Body, &p)
		sent = append(sent, p)
	}
	if len(sent) != 3 || sent[1].Namespace != "storage" || sent[1].Labels["app"] != "db" || sent[1].UID != "6f1c2a4e-0000-4000-8000-000000000001" ||
		sent[1].Annotations["team"] != "storage" || sent[0].Namespace != "default" {
		t.Fatalf("sent %+v", sent)
	}

	// stdin, -n for pods without a namespace, JSON output of what the agent stored.
	r := run(t, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api","labels":{"app":"api"}}}`,
		f.args("pod", "apply", "-f", "-", "-n", "staging", "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("apply from stdin: %s", r.stderr)
	}
	var applied []models.Pod
	mustJSON(t, r.stdout, &applied)
	if len(applied) != 1 || applied[0].Namespace != "staging" || applied[0].Source != "api" {
		t.Fatalf("applied %+v", applied)
	}

	// A bad manifest anywhere: nothing is sent.
	n := len(f.sent())
	e := fails(t, f.args("pod", "apply", "-f", "testdata/pods.yaml", "-f", "testdata/bad-name.yaml")...)
	if !strings.Contains(e, "testdata/bad-name.yaml: document 2 (line 7): invalid pod name \"Web_1\"") || len(f.sent()) != n {
		t.Fatalf("stderr %q, %d requests sent", e, len(f.sent())-n)
	}
	// The same pod twice across files.
	e = fails(t, f.args("pod", "apply", "-f", "testdata/pods.yaml", "-f", "testdata/pods.yaml")...)
	if !strings.Contains(e, "pod default/web is already defined at testdata/pods.yaml: document 1") {
		t.Fatalf("stderr %q", e)
	}
	// The agent refuses one: stop there, name it.
	r = run(t, "kind: Pod\nmetadata: {name: ok1}\n---\nkind: Pod\nmetadata: {name: refused}\n---\nkind: Pod\nmetadata: {name: ok2}\n",
		f.args("pod", "apply", "-f", "-")...)
	if r.code != 1 || r.stdout != "pod default/ok1 applied\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	if !strings.Contains(r.stderr, `apply pod default/refused (<stdin>: document 2 (line 4)): agent: label "k8s:x" refused (HTTP 400)`) {
		t.Fatalf("stderr %q", r.stderr)
	}
	if e := fails(t, f.args("pod", "apply")...); !strings.Contains(e, "give at least one -f FILE") {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, f.args("pod", "apply", "-f", "testdata/nope.yaml")...); !strings.Contains(e, "no such file") {
		t.Errorf("stderr %q", e)
	}
}

func TestPodApplyDirectory(t *testing.T) {
	f := newFakeAgent(t)
	f.handle("PUT /v1/pod/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	dir := t.TempDir()
	os.WriteFile(dir+"/a.yaml", []byte("kind: Pod\nmetadata: {name: a}\n"), 0o644)
	os.WriteFile(dir+"/b.json", []byte(`{"kind":"Pod","metadata":{"name":"b"}}`), 0o644)
	os.WriteFile(dir+"/README.md", []byte("not a manifest"), 0o644)
	wantLines(t, ok(t, f.args("pod", "apply", "-f", dir)...), "pod default/a applied", "pod default/b applied")
}

func TestUnreachableAgent(t *testing.T) {
	sock := tempSocket(t)
	e := fails(t, "--socket", sock, "endpoint", "list")
	if want := "Error: cannot reach membrane-agent at " + sock + ": no such socket; is the agent running?"; !strings.HasPrefix(e, want) {
		t.Errorf("stderr %q, want prefix %q", e, want)
	}

	// A socket file nobody listens on (an agent that died).
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	e = fails(t, "--socket", sock, "status")
	if !strings.Contains(e, "connection refused") || !strings.Contains(e, "is the agent running?") {
		t.Errorf("stderr %q", e)
	}

	// $MEMBRANE_SOCKET is the default.
	t.Setenv("MEMBRANE_SOCKET", sock)
	if e := fails(t, "ipam", "list"); !strings.Contains(e, sock) {
		t.Errorf("stderr %q does not name $MEMBRANE_SOCKET", e)
	}
}

func TestAgentWithoutRoute(t *testing.T) {
	f := newFakeAgent(t)
	e := fails(t, f.args("identity", "list")...)
	if !strings.Contains(e, "no route for GET /v1/identity (HTTP 404)") || !strings.Contains(e, "does not serve the route") {
		t.Errorf("stderr %q", e)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"endpiont", "list"},
		{"endpoint", "bogus"},
		{"endpoint", "get"},
		{"endpoint", "list", "--bogus"},
		{"-o", "xml", "status"},
		{"--timeout", "0s", "status"},
	} {
		r := run(t, "", args...)
		if r.code != 1 {
			t.Errorf("membrane %v: exit %d", args, r.code)
			continue
		}
		checkErrorLine(t, r.stderr)
	}
	if e := fails(t, "endpiont"); !strings.Contains(e, "Did you mean this? endpoint") {
		t.Errorf("stderr %q", e)
	}
}

// TestHelp checks every command explains itself with an example and that
// --help works on each.
func TestHelp(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Short == "" || c.Example == "" {
			t.Errorf("%q lacks a short description or an example", c.CommandPath())
		}
		if c.Runnable() && !c.HasSubCommands() && c.Long == "" {
			t.Errorf("%q lacks a long description", c.CommandPath())
		}
		path := strings.Fields(c.CommandPath())[1:]
		out := ok(t, append(path, "--help")...)
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, "Examples:") {
			t.Errorf("%q --help:\n%s", c.CommandPath(), out)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCommand())
}

func TestTimeout(t *testing.T) {
	f := newFakeAgent(t)
	release := make(chan struct{})
	defer close(release)
	f.handle("GET /v1/endpoint", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	e := fails(t, f.args("endpoint", "list", "--timeout", "100ms")...)
	if !strings.Contains(e, "context deadline exceeded") || !strings.Contains(e, "did not answer within --timeout=100ms") {
		t.Errorf("stderr %q", e)
	}
}
