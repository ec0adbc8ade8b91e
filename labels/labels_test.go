package labels

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Label
	}{
		{"k8s:app=web", Label{Source: "k8s", Key: "app", Value: "web"}},
		{"app=web", Label{Source: DefaultSource, Key: "app", Value: "web"}},
		{"reserved:host", Label{Source: "reserved", Key: "host"}},
		{"  k8s:io.kubernetes.pod.namespace=default ", Label{Source: "k8s", Key: NamespaceKey, Value: "default"}},
		{"k8s:app.kubernetes.io/name=shop", Label{Source: "k8s", Key: "app.kubernetes.io/name", Value: "shop"}},
		{"app=", Label{Source: DefaultSource, Key: "app"}},
	} {
		got, err := Parse(tc.in, DefaultSource)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"", "   ", "k8s:", "K8S:app=web", "k8s:app=we b", "k8s:-app=web", "k8s:app=" + strings.Repeat("v", 64),
		"k8s:a/b/c=x", "app=web:prod", ":app",
	} {
		if l, err := Parse(in, DefaultSource); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, l)
		}
	}
	// The error names the label.
	_, err := Parse("k8s:app=we b", DefaultSource)
	if err == nil || !strings.Contains(err.Error(), `"k8s:app=we b"`) {
		t.Errorf("error %v does not name the label", err)
	}
}

func TestLabelsCanonical(t *testing.T) {
	a := mustList(t, "k8s:b=2", "k8s:a=1", "container:z=9")
	b := mustList(t, "container:z=9", "k8s:a=1", "k8s:b=2")
	if !a.Equal(b) || a.String() != b.String() {
		t.Fatalf("same labels in another order differ: %q vs %q", a, b)
	}
	if want := "container:z=9;k8s:a=1;k8s:b=2"; a.String() != want {
		t.Errorf("String = %q, want %q", a.String(), want)
	}
	// A later label replaces an earlier one with the same source:key.
	c := mustList(t, "k8s:a=1", "k8s:a=2")
	if got := c.Strings(); !slices.Equal(got, []string{"k8s:a=2"}) {
		t.Errorf("duplicate key: %v", got)
	}
}

func TestMergeAndFromMap(t *testing.T) {
	pod := FromMap(map[string]string{"app": "web", "env": "prod"}, SourceK8s)
	req := mustList(t, "k8s:env=dev", "container:extra=1")
	got := Merge(pod, req).Strings()
	want := []string{"container:extra=1", "k8s:app=web", "k8s:env=dev"}
	if !slices.Equal(got, want) {
		t.Errorf("Merge = %v, want %v (second argument wins)", got, want)
	}
	if v, ok := Merge(pod, req).Get(SourceK8s, "env"); !ok || v != "dev" {
		t.Errorf("Get env = %q %v", v, ok)
	}
	if pod.Has(Label{Source: SourceK8s, Key: "env", Value: "dev"}) {
		t.Error("Merge modified its input")
	}
}
