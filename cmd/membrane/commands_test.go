package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/ipam"
)

// endpointsAgent is the stock agent (dual-stack, waiting for the labels
// of pods it does not know) with three endpoints made as membrane-cni
// makes them, each on a veth of its own:
//
//	web:  pod default/web (uid-1, app=web), IPv4 and IPv6, ready
//	web2: pod default/web-2 (app=web: the same identity), IPv4, ready
//	cart: pod shop/cart, which the agent does not know: waiting for its labels
type endpointsAgent struct {
	*testAgent
	web, web2, cart *models.Endpoint
}

func startEndpointsAgent(t *testing.T) *endpointsAgent {
	t.Helper()
	a := startAgent(t, dualStack, podsWaitedFor)
	a.putPod(models.Pod{Namespace: "default", Name: "web", UID: "uid-1", Labels: map[string]string{"app": "web"}})
	a.putPod(models.Pod{Namespace: "default", Name: "web-2", Labels: map[string]string{"app": "web"}})
	return &endpointsAgent{
		testAgent: a,
		web:       a.addEndpoint(endpointSpec{container: "abcdef0123456789abcdef", pod: "default/web"}),
		web2:      a.addEndpoint(endpointSpec{container: "0a1b2c3d4e5f60718293", pod: "default/web-2", family: "ipv4"}),
		cart:      a.addEndpoint(endpointSpec{container: "c0ffee00112233445566", pod: "shop/cart", family: "ipv4", noWait: true}),
	}
}

// idOf is an endpoint's ID as the CLI takes it.
func idOf(ep *models.Endpoint) string { return strconv.Itoa(int(ep.ID)) }

// byID is a table as the CLI prints it whose first column is an endpoint
// ID: rows sorted by ID, the column as wide as the widest ID (the agent
// picks IDs at random). rows holds, for each endpoint, its line after the
// ID column, then its continuation lines.
func byID(header string, rows map[*models.Endpoint][]string) []string {
	eps := slices.SortedFunc(maps.Keys(rows), func(x, y *models.Endpoint) int { return int(x.ID) - int(y.ID) })
	w := len("ID")
	for _, ep := range eps {
		w = max(w, len(idOf(ep)))
	}
	w += 3 // the tables' padding
	out := []string{padRight("ID", w) + header}
	for _, ep := range eps {
		for i, l := range rows[ep] {
			id := ""
			if i == 0 {
				id = idOf(ep)
			}
			out = append(out, strings.TrimRight(padRight(id, w)+l, " "))
		}
	}
	return out
}

// logLines is an endpoint's status log as the CLI prints it (a log with
// a waiting-to-regenerate entry, the longest state).
func logLines(log []models.StatusEntry) []string {
	out := []string{"TIMESTAMP              STATE                   CODE   MESSAGE"}
	for _, e := range log {
		out = append(out, fmt.Sprintf("%-23s%-24s%-7s%s", e.Timestamp.Format(time.RFC3339), e.State, e.Code, e.Message))
	}
	return out
}

// TestEndpointCommands reads endpoints, the agent's status and identities:
// the commands that change nothing.
func TestEndpointCommands(t *testing.T) {
	a := startEndpointsAgent(t)

	t.Run("list", func(t *testing.T) {
		const header = "STATE                  IDENTITY   POD             CONTAINER           INTERFACE      IPV4         IPV6          LABELS"
		labels := strings.Repeat(" ", strings.Index(header, "LABELS")) // a continuation line up to the labels
		wantLines(t, ok(t, a.args("endpoint", "list")...), byID(header, map[*models.Endpoint][]string{
			a.web: {
				"ready                  256        default/web     abcdef012345:eth0   mbabcdef0123   10.200.0.2   fd00:200::2   k8s:app=web",
				labels + "k8s:io.kubernetes.pod.namespace=default",
			},
			a.web2: {
				"ready                  256        default/web-2   0a1b2c3d4e5f:eth0   mb0a1b2c3d4e   10.200.0.3   -             k8s:app=web",
				labels + "k8s:io.kubernetes.pod.namespace=default",
			},
			a.cart: {"waiting-for-identity   -          shop/cart       c0ffee001122:eth0   mbc0ffee0011   10.200.0.4   -             -"},
		})...)
	})

	t.Run("list -o json", func(t *testing.T) {
		out := ok(t, a.args("endpoint", "list", "-o", "json")...)
		var eps []models.Endpoint
		mustJSON(t, out, &eps)
		if len(eps) != 3 || !slices.IsSortedFunc(eps, func(x, y models.Endpoint) int { return int(x.ID) - int(y.ID) }) {
			t.Fatalf("want 3 endpoints sorted by ID, got %+v", eps)
		}
		var generic []map[string]any
		mustJSON(t, out, &generic)
		byID := map[float64]map[string]any{}
		for _, g := range generic {
			byID[g["id"].(float64)] = g
		}
		web, cart := byID[float64(a.web.ID)], byID[float64(a.cart.ID)]
		// The keys scripts rely on, for a ready endpoint with a pod.
		for _, k := range []string{"id", "state", "container-id", "interface-name", "k8s-namespace", "k8s-pod-name", "labels", "identity", "addressing"} {
			if _, ok := web[k]; !ok {
				t.Errorf("endpoint %v has no key %q", web["id"], k)
			}
		}
		if id := web["identity"].(map[string]any); id["id"] != 256.0 || len(id["labels"].([]any)) != 2 {
			t.Errorf("identity = %v", id)
		}
		if ad := web["addressing"].(map[string]any); ad["ipv4"] != "10.200.0.2" || ad["ipv6"] != "fd00:200::2" {
			t.Errorf("addressing = %v", ad)
		}
		if l, ok := cart["labels"].([]any); !ok || len(l) != 0 || cart["identity"] != nil || cart["state"] != "waiting-for-identity" {
			t.Errorf("endpoint waiting for its pod's labels: %v", cart)
		}
	})

	t.Run("list -o yaml", func(t *testing.T) {
		out := ok(t, a.args("endpoint", "list", "-o", "yaml")...)
		if !strings.Contains(out, "container-id: abcdef0123456789abcdef") || !strings.Contains(out, "k8s-pod-name: web") {
			t.Fatalf("YAML lacks the kebab-case keys:\n%s", out)
		}
		var eps []models.Endpoint
		if err := yaml.Unmarshal([]byte(out), &eps); err != nil || len(eps) != 3 || eps[0].ID != min(a.web.ID, a.web2.ID, a.cart.ID) {
			t.Fatalf("YAML does not read back (%v): %+v", err, eps)
		}
	})

	t.Run("get", func(t *testing.T) {
		ep, err := a.client.GetEndpoint(a.ctx(), idOf(a.web))
		if err != nil {
			t.Fatal(err)
		}
		if ep.Mac == "" || ep.HostMac == "" || ep.InterfaceIndex <= 1 || ep.Status[0].Message != "endpoint created" ||
			ep.Status[len(ep.Status)-1].State != models.StateReady {
			t.Fatalf("the agent's endpoint %+v", ep)
		}
		// The ID travels escaped, as one path segment.
		wantLines(t, ok(t, a.args("endpoint", "get", "pod-name:default/web")...), slices.Concat([]string{
			"ID:                    " + idOf(a.web),
			"State:                 ready",
			"Container ID:          abcdef0123456789abcdef",
			"Container interface:   eth0",
			"Host interface:        mbabcdef0123 (ifindex " + strconv.Itoa(ep.InterfaceIndex) + ")",
			"MAC:                   " + ep.Mac,
			"Host MAC:              " + ep.HostMac,
			"Pod:                   default/web",
			"Pod UID:               uid-1",
			"IPv4:                  10.200.0.2",
			"IPv6:                  fd00:200::2",
			"Labels:                k8s:app=web",
			"                       k8s:io.kubernetes.pod.namespace=default",
			"Identity:              256",
			"Identity labels:       k8s:app=web",
			"                       k8s:io.kubernetes.pod.namespace=default",
			"Policy revision:       0",
			"Created:               " + ep.Created.Format(time.RFC3339),
			"",
			"Status:",
		}, logLines(ep.Status))...)

		out := ok(t, a.args("endpoint", "get", idOf(a.cart))...)
		for _, want := range []string{"\nState:                 waiting-for-identity\n", "\nPod:                   shop/cart\n",
			"\nLabels:                -\nIdentity:              -\nPolicy revision:       0\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("endpoint waiting for its pod's labels lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("log", func(t *testing.T) {
		ep, err := a.client.GetEndpoint(a.ctx(), idOf(a.web2))
		if err != nil {
			t.Fatal(err)
		}
		wantLines(t, ok(t, a.args("endpoint", "log", "container-id:0a1b2c3d4e5f60718293")...), logLines(ep.Status)...)
		var log []models.StatusEntry
		mustJSON(t, ok(t, a.args("endpoint", "log", idOf(a.web2), "-o", "json")...), &log)
		if len(log) != len(ep.Status) || log[0].Message != "endpoint created" {
			t.Fatalf("log %+v", log)
		}
	})

	t.Run("status", func(t *testing.T) {
		out := ok(t, a.args("status")...)
		if !regexp.MustCompile(`^Agent:     healthy\nVersion:   \S+\nUptime:    \S+\n\nCELL +HEALTH\n`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^ipam +OK: allocating from 10\.200\.0\.0/24 and fd00:200::/64`).MatchString(out) {
			t.Fatalf("status:\n%s", out)
		}
		cellTable := strings.Split(strings.Split(out, "\n\n")[1], "\n")[1:]
		if !slices.IsSorted(cellTable) {
			t.Errorf("cells not sorted:\n%s", out)
		}
		if want := "\n\nENDPOINT STATE         COUNT\nwaiting-for-identity   1\nready                  2\ntotal                  3\n"; !strings.HasSuffix(out, want) {
			t.Errorf("status:\n%s\nwant it to end with the endpoints by state in lifecycle order:%s", out, want)
		}
		var s models.Status
		mustJSON(t, ok(t, a.args("status", "-o", "json")...), &s)
		if !s.Healthy || !maps.Equal(s.Endpoints, map[string]int{"ready": 2, "waiting-for-identity": 1}) || !strings.HasPrefix(s.Modules["ipam"], "OK") {
			t.Errorf("status JSON %+v", s)
		}
	})

	t.Run("identity", func(t *testing.T) {
		wantLines(t, ok(t, a.args("identity", "list")...),
			"ID    SOURCE     ENDPOINTS   LABELS",
			"1     reserved   0           reserved:host",
			"2     reserved   0           reserved:world",
			"3     reserved   0           reserved:unmanaged",
			"4     reserved   0           reserved:health",
			"5     reserved   0           reserved:init",
			"6     reserved   0           reserved:remote-node",
			"7     reserved   0           reserved:kube-apiserver",
			"8     reserved   0           reserved:ingress",
			"9     reserved   0           reserved:world-ipv4",
			"10    reserved   0           reserved:world-ipv6",
			"256   local      2           k8s:app=web",
			"                             k8s:io.kubernetes.pod.namespace=default",
		)
		wantLines(t, ok(t, a.args("identity", "get", "256")...),
			"ID:          256",
			"Labels:      k8s:app=web",
			"             k8s:io.kubernetes.pod.namespace=default",
			"Source:      local",
			"Endpoints:   2",
		)
		var ids []models.Identity
		mustJSON(t, ok(t, a.args("identity", "list", "-o", "json")...), &ids)
		if len(ids) != 11 || ids[0].ID != 1 || ids[10].ID != 256 || ids[10].Endpoints != 2 {
			t.Errorf("identities JSON %+v", ids)
		}
		if e := fails(t, a.args("identity", "get", "web")...); !strings.Contains(e, `invalid identity "web": want a number`) || strings.Contains(e, "HTTP") {
			t.Errorf("stderr %q", e)
		}
		if e := fails(t, a.args("identity", "get", "300")...); !strings.HasPrefix(e, "Error: get identity 300: agent: identity 300 not found") ||
			!strings.HasSuffix(e, "(HTTP 404)\n") {
			t.Errorf("stderr %q", e)
		}
	})
}

func TestEndpointLabels(t *testing.T) {
	a := startEndpointsAgent(t)
	wantLines(t, ok(t, a.args("endpoint", "labels", idOf(a.web))...),
		"ORIGIN      LABEL",
		"requested   -",
		"pod         k8s:app=web",
		"pod         k8s:io.kubernetes.pod.namespace=default",
		"security    k8s:app=web",
		"security    k8s:io.kubernetes.pod.namespace=default",
	)

	// The endpoint waiting for its pod: no pod labels, no identity yet.
	cart := idOf(a.cart)
	wantLines(t, ok(t, a.args("endpoint", "labels", cart, "--add", "tier=silver,zone=a", "--add", "k8s:x=y")...),
		"ORIGIN      LABEL",
		"requested   container:tier=silver",
		"requested   container:zone=a",
		"requested   k8s:x=y",
		"pod         -",
		"security    -",
	)
	var ls models.EndpointLabels
	mustJSON(t, ok(t, a.args("endpoint", "labels", cart, "--delete", "container:tier=silver", "-o", "json")...), &ls)
	if !slices.Equal(ls.Requested, []string{"container:zone=a", "k8s:x=y"}) || ls.Pod == nil || ls.Security == nil {
		t.Fatalf("labels JSON %+v", ls)
	}

	// A malformed label is refused before anything is sent.
	errLine := fails(t, a.args("endpoint", "labels", cart, "--add", "app=we b")...)
	if !strings.Contains(errLine, `invalid value "we b"`) || strings.Contains(errLine, "HTTP") {
		t.Fatalf("stderr %q", errLine)
	}
	if got, err := a.client.EndpointLabels(a.ctx(), cart); err != nil || len(got.Requested) != 2 {
		t.Fatalf("labels after a refused change: %+v, %v", got, err)
	}

	// A ready endpoint's new labels give it a new identity.
	web := idOf(a.web)
	if out := ok(t, a.args("endpoint", "labels", "pod-name:default/web", "--add", "tier=gold")...); !strings.Contains(out, "\nrequested   container:tier=gold\n") {
		t.Fatalf("endpoint labels --add:\n%s", out)
	}
	ep := a.waitForEndpoint(web, func(ep *models.Endpoint) bool { return ep.State == models.StateReady && ep.Identity.ID != 256 })
	wantLines(t, ok(t, a.args("endpoint", "labels", web)...),
		"ORIGIN      LABEL",
		"requested   container:tier=gold",
		"pod         k8s:app=web",
		"pod         k8s:io.kubernetes.pod.namespace=default",
		"security    container:tier=gold",
		"security    k8s:app=web",
		"security    k8s:io.kubernetes.pod.namespace=default",
	)
	// Its status log is longer than endpoint get shows.
	out := ok(t, a.args("endpoint", "get", web)...)
	want := fmt.Sprintf("\n\nLatest status (5 of %d; all of it: membrane endpoint log %s):\n%s\n", len(ep.Status), web,
		strings.Join(logLines(ep.Status[len(ep.Status)-5:]), "\n"))
	if len(ep.Status) <= 5 || !strings.HasSuffix(out, want) {
		t.Fatalf("endpoint get:\n%s\nwant it to end with%s", out, want)
	}
}

// waitForEndpoint waits, boundedly, until the endpoint is as cond wants.
func (a *testAgent) waitForEndpoint(id string, cond func(*models.Endpoint) bool) *models.Endpoint {
	a.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ep, err := a.client.GetEndpoint(a.ctx(), id)
		if err != nil {
			a.t.Fatal(err)
		}
		if cond(ep) {
			return ep
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("endpoint %s never got as expected: %+v", id, ep)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEndpointDelete(t *testing.T) {
	a := startEndpointsAgent(t)
	web, web2, unused := idOf(a.web), idOf(a.web2), unusedEndpointID(a.web, a.web2, a.cart)

	// It stops at the first endpoint it cannot delete.
	r := run(t, "", a.args("endpoint", "delete", web, unused, web2)...)
	if r.code != 1 || r.stdout != "endpoint "+web+" deleted\n" {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	if !strings.HasPrefix(r.stderr, "Error: delete endpoint "+unused+": agent: ") || !strings.HasSuffix(r.stderr, " (HTTP 404)\n") {
		t.Errorf("stderr %q", r.stderr)
	}
	ok(t, a.args("endpoint", "get", web2)...)

	wantLines(t, ok(t, a.args("endpoint", "delete", web2, "container-id:c0ffee00112233445566")...),
		"endpoint "+web2+" deleted", "endpoint container-id:c0ffee00112233445566 deleted")
	wantLines(t, ok(t, a.args("endpoint", "list")...),
		"ID   STATE   IDENTITY   POD   CONTAINER   INTERFACE   IPV4   IPV6   LABELS")
	wantLines(t, ok(t, a.args("endpoint", "list", "-o", "json")...), "[]")

	e := fails(t, a.args("endpoint", "get", web)...)
	if !strings.HasPrefix(e, "Error: get endpoint "+web+": agent: ") || !strings.Contains(e, web) || !strings.HasSuffix(e, " (HTTP 404)\n") {
		t.Errorf("stderr %q", e)
	}
	// Not an endpoint ID at all.
	if e := fails(t, a.args("endpoint", "get", "5000")...); !strings.Contains(e, `invalid endpoint ID "5000"`) || !strings.HasSuffix(e, " (HTTP 400)\n") {
		t.Errorf("stderr %q", e)
	}
}

func TestIPAMList(t *testing.T) {
	// A pod CIDR whose addresses cross from two to three digits: .98, .99,
	// .100 (.97 is the router), so numeric order is not text order.
	a := startAgent(t, withConfig(func(c *ipam.Config) { c.PodCIDR, c.PodCIDRV6 = "10.200.0.96/27", "fd00:200::/64" }))
	for _, r := range []models.IPAMRequest{
		{Owner: "c1:eth0", Pod: "default/web"},
		{Owner: "c2:eth0", Family: "ipv6"},
		{Owner: "c3:eth0", Pod: "default/db", Family: "ipv4"},
		{Owner: "c4:eth0", Pod: "default/cache", Family: "ipv4"},
	} {
		if _, err := a.client.AllocateIP(a.ctx(), &r); err != nil {
			t.Fatal(err)
		}
	}
	ips, err := a.client.ListIPs(a.ctx())
	if err != nil {
		t.Fatal(err)
	}
	created := map[string]string{}
	for _, ip := range ips {
		created[ip.IP] = ip.Created.Format(time.RFC3339)
	}
	wantLines(t, ok(t, a.args("ipam", "list")...),
		"IP             OWNER     POD             CREATED",
		"10.200.0.98    c1:eth0   default/web     "+created["10.200.0.98"],
		"10.200.0.99    c3:eth0   default/db      "+created["10.200.0.99"],
		"10.200.0.100   c4:eth0   default/cache   "+created["10.200.0.100"],
		"fd00:200::2    c1:eth0   default/web     "+created["fd00:200::2"],
		"fd00:200::3    c2:eth0   -               "+created["fd00:200::3"],
	)
	var listed []models.IPAMAllocation
	mustJSON(t, ok(t, a.args("ipam", "list", "-o", "json")...), &listed)
	if len(listed) != 5 || listed[0].IP != "10.200.0.98" || listed[2].IP != "10.200.0.100" || listed[4].Pod != "" {
		t.Errorf("ipam JSON %+v", listed)
	}
}

// manifestDir writes Pod manifests for --pod-manifest-dir, dated in the
// past so the agent loads them at its first scan.
func manifestDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	long := time.Now().Add(-time.Hour)
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, long, long); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPodListAndDelete(t *testing.T) {
	a := startAgent(t, withManifests(manifestDir(t, map[string]string{
		"web.yaml": "kind: Pod\nmetadata:\n  name: web\n  uid: u1\n  labels: {tier: front, app: web}\n",
	})))
	a.waitForPod("default/web")
	a.putPod(models.Pod{Namespace: "shop", Name: "cart", Labels: map[string]string{"app": "cart"}})

	wantLines(t, ok(t, a.args("pod", "list")...),
		"NAMESPACE   NAME   UID   LABELS       SOURCE",
		"default     web    u1    app=web      manifest:web.yaml",
		"                         tier=front",
		"shop        cart   -     app=cart     api",
	)
	wantLines(t, ok(t, a.args("pod", "delete", "shop/cart", "default/web")...), "pod shop/cart deleted", "pod default/web deleted")
	wantLines(t, ok(t, a.args("pod", "list", "-o", "json")...), "[]")
	if e := fails(t, a.args("pod", "delete", "shop/cart")...); e != "Error: delete pod shop/cart: agent: pod shop/cart not found (HTTP 404)\n" {
		t.Errorf("stderr %q", e)
	}
	for _, bad := range []string{"web", "default/", "/web", "a/b/c"} {
		if e := fails(t, a.args("pod", "delete", bad)...); !strings.Contains(e, "want NAMESPACE/NAME") {
			t.Errorf("pod delete %s: %q", bad, e)
		}
	}
}

// pods is what the agent holds, by NAMESPACE/NAME.
func (a *testAgent) pods() map[string]models.Pod {
	a.t.Helper()
	list, err := a.client.ListPods(a.ctx())
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string]models.Pod{}
	for _, p := range list {
		out[p.Namespace+"/"+p.Name] = p
	}
	return out
}

func TestPodApply(t *testing.T) {
	a := startAgent(t)
	wantLines(t, ok(t, a.args("pod", "apply", "-f", "testdata/pods.yaml")...),
		"pod default/web applied",
		"pod storage/db applied",
		"pod default/cache applied",
	)
	pods := a.pods()
	if db := pods["storage/db"]; len(pods) != 3 || db.Labels["app"] != "db" || db.UID != "6f1c2a4e-0000-4000-8000-000000000001" ||
		db.Annotations["team"] != "storage" || db.Source != "api" || pods["default/web"].Name != "web" {
		t.Fatalf("the agent holds %+v", pods)
	}

	// stdin, -n for pods without a namespace, JSON output of what the agent stored.
	r := run(t, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api","labels":{"app":"api"}}}`,
		a.args("pod", "apply", "-f", "-", "-n", "staging", "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("apply from stdin: %s", r.stderr)
	}
	var applied []models.Pod
	mustJSON(t, r.stdout, &applied)
	if len(applied) != 1 || applied[0].Namespace != "staging" || applied[0].Source != "api" || applied[0].Labels["app"] != "api" {
		t.Fatalf("applied %+v", applied)
	}

	// A bad manifest anywhere: nothing is sent.
	fresh := filepath.Join(t.TempDir(), "fresh.yaml")
	os.WriteFile(fresh, []byte("kind: Pod\nmetadata: {name: fresh}\n"), 0o644)
	e := fails(t, a.args("pod", "apply", "-f", fresh, "-f", "testdata/bad-name.yaml")...)
	if !strings.Contains(e, "testdata/bad-name.yaml: document 2 (line 7): invalid pod name \"Web_1\"") {
		t.Fatalf("stderr %q", e)
	}
	if _, sent := a.pods()["default/fresh"]; sent {
		t.Fatal("a pod of an invalid apply reached the agent")
	}
	// The same pod twice across files.
	e = fails(t, a.args("pod", "apply", "-f", "testdata/pods.yaml", "-f", "testdata/pods.yaml")...)
	if !strings.Contains(e, "pod default/web is already defined at testdata/pods.yaml: document 1") {
		t.Fatalf("stderr %q", e)
	}

	// The agent refuses one (its requests are at most 1 MiB): stop there, name it.
	big := strings.Repeat("x", 1<<20)
	r = run(t, "kind: Pod\nmetadata: {name: ok1}\n---\nkind: Pod\nmetadata:\n  name: big\n  annotations: {blob: "+big+"}\n---\nkind: Pod\nmetadata: {name: ok2}\n",
		a.args("pod", "apply", "-f", "-")...)
	if r.code != 1 || r.stdout != "pod default/ok1 applied\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	checkErrorLine(t, r.stderr)
	if !strings.HasPrefix(r.stderr, "Error: apply pod default/big (<stdin>: document 2 (line 4)): agent: ") || !strings.HasSuffix(r.stderr, " (HTTP 413)\n") {
		t.Fatalf("stderr %q", r.stderr)
	}
	if _, sent := a.pods()["default/ok2"]; sent {
		t.Fatal("apply went on after the agent refused a pod")
	}

	if e := fails(t, a.args("pod", "apply")...); !strings.Contains(e, "give at least one -f FILE") {
		t.Errorf("stderr %q", e)
	}
	if e := fails(t, a.args("pod", "apply", "-f", "testdata/nope.yaml")...); !strings.Contains(e, "no such file") {
		t.Errorf("stderr %q", e)
	}
}

func TestPodApplyDirectory(t *testing.T) {
	a := startAgent(t)
	dir := t.TempDir()
	os.WriteFile(dir+"/a.yaml", []byte("kind: Pod\nmetadata: {name: a}\n"), 0o644)
	os.WriteFile(dir+"/b.json", []byte(`{"kind":"Pod","metadata":{"name":"b"}}`), 0o644)
	os.WriteFile(dir+"/README.md", []byte("not a manifest"), 0o644)
	wantLines(t, ok(t, a.args("pod", "apply", "-f", dir)...), "pod default/a applied", "pod default/b applied")
	if pods := a.pods(); len(pods) != 2 || pods["default/b"].Source != "api" {
		t.Fatalf("the agent holds %+v", pods)
	}
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

// TestAgentWithoutRoute runs a custom agent without the identity and
// policy cells (TestMonitorErrors: without the monitor's).
func TestAgentWithoutRoute(t *testing.T) {
	a := startAgent(t, apiOnly)
	e := fails(t, a.args("identity", "list")...)
	if !strings.Contains(e, "no route for GET /v1/identity (HTTP 404)") || !strings.Contains(e, "does not serve the route") {
		t.Errorf("stderr %q", e)
	}
	// Before the policy engine serves traces, the operator learns why.
	if e := fails(t, a.args("policy", "trace", "--src-labels", "a", "--dst-labels", "b")...); !strings.Contains(e, "no route for POST /v1/policy/trace") {
		t.Errorf("stderr %q", e)
	}
	// What it serves works.
	out := ok(t, a.args("status")...)
	wantLines(t, out[strings.Index(out, "\n\n")+2:],
		"CELL              HEALTH",
		"(none reported)",
		"",
		"ENDPOINT STATE   COUNT",
		"total            0",
	)
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

// TestHelp checks every command (cobra's completion command too) explains
// itself with an example and that --help works on each.
func TestHelp(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
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

// TestTimeout: an agent that takes the connection and never answers.
func TestTimeout(t *testing.T) {
	sock := silentSocket(t)
	e := fails(t, "--socket", sock, "endpoint", "list", "--timeout", "100ms")
	if !strings.Contains(e, "context deadline exceeded") || !strings.Contains(e, "the agent at "+sock+" did not answer within --timeout=100ms") {
		t.Errorf("stderr %q", e)
	}
}

// TestDescribe turns errors the agent cannot be made to return into the
// line an operator reads.
func TestDescribe(t *testing.T) {
	a := &app{socket: tempSocket(t), timeout: 3 * time.Second}
	malformed := json.Unmarshal([]byte("<html>"), new(any))
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("list endpoints: %w", &client.APIError{Code: 500, Message: "statedb: table is locked"}),
			"list endpoints: agent: statedb: table is locked (HTTP 500)"},
		{fmt.Errorf("monitor: %w", &client.APIError{Code: 400, Message: `invalid type "x": want drop, verdict or all`}),
			`monitor: agent: invalid type "x": want drop, verdict or all (HTTP 400)`},
		{fmt.Errorf("get endpoint 7: %w", &client.APIError{Code: 502, Message: "<html>\n  <body>Bad gateway</body>\n</html>"}),
			"get endpoint 7: agent: <html> <body>Bad gateway</body> </html> (HTTP 502)"},
		{fmt.Errorf("list pods: GET /v1/pod: decoding answer: %w", malformed),
			"list pods: GET /v1/pod: decoding answer: invalid character '<' looking for beginning of value"},
		{fmt.Errorf("list identities: %w", &client.APIError{Code: 404, Message: "no route for GET /v1/identity"}),
			"list identities: agent: no route for GET /v1/identity (HTTP 404) (this membrane-agent does not serve the route: " +
				"is it an older version, or a custom agent without that cell?)"},
		{fmt.Errorf("list endpoints: %w", context.DeadlineExceeded),
			"list endpoints: context deadline exceeded (the agent at " + a.socket + " did not answer within --timeout=3s)"},
		{fmt.Errorf("list endpoints: %w", context.Canceled), "interrupted"},
		{fmt.Errorf("%w at %s: dial unix: connect", client.ErrAgentUnreachable, a.socket),
			"cannot reach membrane-agent at " + a.socket + ": no such socket; is the agent running? (--socket or $MEMBRANE_SOCKET select another socket)"},
		{errors.New("two\nlines\n"), "two lines"},
	} {
		if got := a.describe(c.err); got != c.want {
			t.Errorf("describe(%v):\n got %s\nwant %s", c.err, got, c.want)
		}
	}
}

// TestStatusUnhealthy renders health the agent reports only when a cell
// fails: an unhealthy agent, a multi-line health message, an endpoint
// state this CLI does not know.
func TestStatusUnhealthy(t *testing.T) {
	s := &models.Status{
		Version: "0.1.0", Uptime: "1m30s", Message: "ipam degraded",
		Endpoints: map[string]int{"ready": 3, "waiting-for-identity": 1, "mystery": 2},
		Modules:   map[string]string{"identity": "OK", "api-server": "OK: listening", "ipam": "Degraded: pool\nexhausted"},
	}
	var out strings.Builder
	if err := printStatus(&out, s); err != nil {
		t.Fatal(err)
	}
	wantLines(t, out.String(),
		"Agent:     UNHEALTHY",
		"Message:   ipam degraded",
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
	)
	for _, c := range []struct {
		healthy bool
		message string
		want    string
	}{
		{false, "ipam degraded", "membrane-agent reports itself unhealthy: ipam degraded"},
		{false, "", "membrane-agent reports itself unhealthy"},
		{true, "", ""},
	} {
		err := healthError(&models.Status{Healthy: c.healthy, Message: c.message})
		if got := fmt.Sprint(err); c.want == "" && err != nil || c.want != "" && (got != c.want || !errors.Is(err, errUnhealthy)) {
			t.Errorf("healthError(healthy %v, %q) = %v, want %q", c.healthy, c.message, err, c.want)
		}
	}
}

// TestNormalize checks the CLI's own ordering of answers, which the agent
// already sends in order: scripts get sorted lists with labels never null
// from any agent.
func TestNormalize(t *testing.T) {
	eps := normalizeEndpoints([]models.Endpoint{{ID: 3012}, {ID: 17, Labels: []string{"k8s:app=web"}, Identity: &models.Identity{ID: 256}}})
	if eps[0].ID != 17 || eps[1].ID != 3012 || eps[1].Labels == nil || eps[0].Identity.Labels == nil {
		t.Errorf("endpoints %+v", eps)
	}
	if eps := normalizeEndpoints(nil); eps == nil {
		t.Error("no endpoints: want [], got null")
	}
	ips := []string{"fd00::2", "x", "10.200.0.10", "10.200.0.9"}
	slices.SortFunc(ips, compareIPs)
	if !slices.Equal(ips, []string{"10.200.0.9", "10.200.0.10", "fd00::2", "x"}) {
		t.Errorf("addresses in order %v", ips)
	}
	at := time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)
	log := sortedLog([]models.StatusEntry{
		{Timestamp: at.Add(2 * time.Second), State: models.StateReady, Code: "ok", Message: "regenerated\nipcache and endpoint map"},
		{Timestamp: at, State: models.StateWaitingForIdentity, Code: "ok", Message: "endpoint created"},
	})
	var out strings.Builder
	printLog(&out, log)
	wantLines(t, out.String(),
		"TIMESTAMP              STATE                  CODE   MESSAGE",
		"2025-01-02T03:04:00Z   waiting-for-identity   ok     endpoint created",
		"2025-01-02T03:04:02Z   ready                  ok     regenerated ipcache and endpoint map",
	)
}

// TestStatusKubernetes renders the Kubernetes connection: an unreachable
// API server with its last error, one cache synced and one not.
func TestStatusKubernetes(t *testing.T) {
	local := time.Local
	time.Local = time.UTC
	t.Cleanup(func() { time.Local = local })
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	s := &models.Status{
		Version: "0.1.0", Uptime: "1m", Healthy: true,
		Endpoints: map[string]int{"ready": 1},
		Modules:   map[string]string{"k8s-client": "OK: API server unreachable"},
		Kubernetes: &models.KubernetesStatus{
			Server: "https://10.0.0.1:6443 (node n1)", Reachable: false, Since: at,
			LastError: "API server unreachable: connection\nrefused", LastErrorAt: at,
			Caches: []models.KubernetesCache{
				{Name: "namespaces", Synced: true, Detail: "every namespace", Events: 3},
				{Name: "pods", Synced: false, LastError: "watch failed", LastErrorAt: at, Events: 0},
			},
		},
	}
	var out strings.Builder
	if err := printStatus(&out, s); err != nil {
		t.Fatal(err)
	}
	wantLines(t, out.String(),
		"Agent:        healthy",
		"Version:      0.1.0",
		"Uptime:       1m",
		"Kubernetes:   https://10.0.0.1:6443 (node n1): UNREACHABLE since 2026-12-04 10:00:00",
		"Last error:   2026-12-04 10:00:00 API server unreachable: connection refused",
		"",
		"KUBERNETES CACHE   SYNCED                  EVENTS   LAST ERROR",
		"namespaces         yes (every namespace)   3        -",
		"pods               no                      0        2026-12-04 10:00:00 watch failed",
		"",
		"CELL         HEALTH",
		"k8s-client   OK: API server unreachable",
		"",
		"ENDPOINT STATE   COUNT",
		"ready            1",
		"total            1",
	)
}

// TestCompletion: cobra's completion command is there, its scripts load,
// and the CLI completes its own commands and flags.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := ok(t, "completion", sh); !strings.Contains(out, "membrane") {
			t.Errorf("membrane completion %s printed no script:\n%.200s", sh, out)
		}
	}
	// What the scripts run on Tab (the directive is reported on stderr).
	if r := run(t, "", "__complete", "sh"); r.code != 0 || !strings.Contains(r.stdout, "shell\t") {
		t.Errorf("completing \"sh\": exit %d:\n%s", r.code, r.stdout)
	}
	if r := run(t, "", "__complete", "shell", "--shell-"); r.code != 0 || !strings.Contains(r.stdout, "--shell-socket") {
		t.Errorf("completing \"shell --shell-\": exit %d:\n%s", r.code, r.stdout)
	}
	if out := ok(t, "--help"); !strings.Contains(out, "completion") {
		t.Errorf("membrane --help does not list completion:\n%s", out)
	}
}
