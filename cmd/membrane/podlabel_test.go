package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

// podStore is a fake agent's pods table: GET and PUT /v1/pod/NS/NAME.
func podStore(t *testing.T, f *fakeAgent, pods ...models.Pod) map[string]models.Pod {
	t.Helper()
	var mu sync.Mutex
	store := map[string]models.Pod{}
	for _, p := range pods {
		store[p.Namespace+"/"+p.Name] = p
	}
	f.handle("GET /v1/pod/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		p, ok := store[r.PathValue("ns")+"/"+r.PathValue("name")]
		if !ok {
			answer(w, 404, `{"code":404,"message":"pod not found"}`)
			return
		}
		b, _ := json.Marshal(p)
		answer(w, 200, string(b))
	})
	f.handle("PUT /v1/pod/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var p models.Pod
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.Namespace != r.PathValue("ns") || p.Name != r.PathValue("name") {
			answer(w, 400, `{"code":400,"message":"body does not match the path"}`)
			return
		}
		if p.Source != "" {
			answer(w, 400, `{"code":400,"message":"source is set by the agent"}`)
			return
		}
		p.Source = "api"
		mu.Lock()
		store[p.Namespace+"/"+p.Name] = p
		mu.Unlock()
		b, _ := json.Marshal(p)
		answer(w, 200, string(b))
	})
	return store
}

func TestPodLabel(t *testing.T) {
	f := newFakeAgent(t)
	store := podStore(t, f, models.Pod{Namespace: "shop", Name: "cart", UID: "u1",
		Labels: map[string]string{"app": "cart", "tier": "back"}, Annotations: map[string]string{"a": "b"}, Source: "api"})

	// A pod the agent does not know is created with the labels.
	wantLines(t, ok(t, f.args("pod", "label", "web", "app=web", "tier=front")...),
		"pod default/web labelled: app=web, tier=front")
	if p := store["default/web"]; p.Labels["app"] != "web" || p.Labels["tier"] != "front" || len(p.Labels) != 2 {
		t.Errorf("default/web = %+v", p)
	}

	// An existing pod: one label changed, one removed, one added; uid and
	// annotations kept.
	wantLines(t, ok(t, f.args("pod", "label", "-n", "shop", "cart", "tier-", "app=basket", "team=payments")...),
		"pod shop/cart labelled: app=basket, team=payments")
	p := store["shop/cart"]
	if p.UID != "u1" || p.Annotations["a"] != "b" || len(p.Labels) != 2 || p.Labels["team"] != "payments" {
		t.Errorf("shop/cart = %+v", p)
	}
	// NAMESPACE/NAME works too; JSON output is the stored pod.
	var got models.Pod
	mustJSON(t, ok(t, f.args("pod", "label", "shop/cart", "app=cart", "-o", "json")...), &got)
	if got.Namespace != "shop" || got.Labels["app"] != "cart" || got.Source != "api" {
		t.Errorf("JSON answer %+v", got)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"web"}, "requires at least 2 arg"},
		{[]string{"web", "app"}, "want KEY=VALUE to set a label or KEY- to remove it"},
		{[]string{"web", "=x"}, "the key is empty"},
		{[]string{"web", "app=a", "app-"}, `label "app" is changed twice`},
		{[]string{"a/b/c", "app=a"}, "want NAME or NAMESPACE/NAME"},
		{[]string{"-n", "shop", "default/web", "app=a"}, `is in namespace "default" but -n says "shop"`},
	} {
		if e := fails(t, f.args(append([]string{"pod", "label"}, c.args...)...)...); !strings.Contains(e, c.want) {
			t.Errorf("pod label %v: %q, want %q", c.args, e, c.want)
		}
	}
}

// Labelling a pod that came from --pod-manifest-dir works and says how
// long it lasts.
func TestPodLabelManifestPod(t *testing.T) {
	f := newFakeAgent(t)
	podStore(t, f, models.Pod{Namespace: "default", Name: "db", Labels: map[string]string{"app": "db"}, Source: "manifest:db.yaml"})
	r := run(t, "", f.args("pod", "label", "db", "tier=storage")...)
	if r.code != 0 || r.stdout != "pod default/db labelled: app=db, tier=storage\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "registered from db.yaml; these labels hold until that manifest changes") {
		t.Errorf("stderr %q", r.stderr)
	}
}

// An agent that refuses the labels: its reason reaches the user.
func TestPodLabelRefused(t *testing.T) {
	f := newFakeAgent(t)
	f.canned("GET /v1/pod/{ns}/{name}", 404, `{"code":404,"message":"pod default/web not found"}`)
	f.canned("PUT /v1/pod/{ns}/{name}", 400, `{"code":400,"message":"label value \"a b\" is invalid"}`)
	if e := fails(t, f.args("pod", "label", "web", "app=a b")...); !strings.Contains(e, "label pod default/web") || !strings.Contains(e, "is invalid") {
		t.Errorf("error %q", e)
	}
}
