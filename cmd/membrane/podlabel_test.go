package main

import (
	"maps"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

func TestPodLabel(t *testing.T) {
	a := startAgent(t, withManifests(manifestDir(t, map[string]string{
		"db.yaml": "kind: Pod\nmetadata: {name: db, labels: {app: db}}\n",
	})))
	a.waitForPod("default/db")
	a.putPod(models.Pod{Namespace: "shop", Name: "cart", UID: "u1",
		Labels: map[string]string{"app": "cart", "tier": "back"}, Annotations: map[string]string{"a": "b"}})

	t.Run("a pod the agent does not know", func(t *testing.T) {
		wantLines(t, ok(t, a.args("pod", "label", "web", "app=web", "tier=front")...),
			"pod default/web labelled: app=web, tier=front")
		if p := a.pods()["default/web"]; !maps.Equal(p.Labels, map[string]string{"app": "web", "tier": "front"}) || p.Source != "api" {
			t.Errorf("default/web = %+v", p)
		}
	})

	t.Run("a known pod", func(t *testing.T) {
		// One label changed, one removed, one added; uid and annotations kept.
		wantLines(t, ok(t, a.args("pod", "label", "-n", "shop", "cart", "tier-", "app=basket", "team=payments")...),
			"pod shop/cart labelled: app=basket, team=payments")
		p := a.pods()["shop/cart"]
		if p.UID != "u1" || p.Annotations["a"] != "b" || !maps.Equal(p.Labels, map[string]string{"app": "basket", "team": "payments"}) {
			t.Errorf("shop/cart = %+v", p)
		}
		// NAMESPACE/NAME works too; JSON output is the stored pod.
		var got models.Pod
		mustJSON(t, ok(t, a.args("pod", "label", "shop/cart", "app=cart", "-o", "json")...), &got)
		if got.Namespace != "shop" || got.Labels["app"] != "cart" || got.UID != "u1" || got.Source != "api" {
			t.Errorf("JSON answer %+v", got)
		}
	})

	// A pod from --pod-manifest-dir: the label holds until its manifest
	// changes, and the operator is told so.
	t.Run("a manifest's pod", func(t *testing.T) {
		r := run(t, "", a.args("pod", "label", "db", "tier=storage")...)
		if r.code != 0 || r.stdout != "pod default/db labelled: app=db, tier=storage\n" ||
			r.stderr != "note: pod default/db was registered from db.yaml; these labels hold until that manifest changes\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	// The agent refuses the labels: its reason reaches the operator.
	t.Run("refused", func(t *testing.T) {
		e := fails(t, a.args("pod", "label", "web", "app=a b")...)
		if !strings.HasPrefix(e, "Error: label pod default/web: agent: ") || !strings.Contains(e, `invalid value "a b"`) || !strings.HasSuffix(e, "(HTTP 400)\n") {
			t.Errorf("error %q", e)
		}
		if p := a.pods()["default/web"]; p.Labels["app"] != "web" {
			t.Errorf("default/web after a refused change: %+v", p)
		}
	})

	t.Run("usage", func(t *testing.T) {
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
			if e := fails(t, a.args(append([]string{"pod", "label"}, c.args...)...)...); !strings.Contains(e, c.want) {
				t.Errorf("pod label %v: %q, want %q", c.args, e, c.want)
			}
		}
	})
}
