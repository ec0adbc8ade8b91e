package podmanifest

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `# two pods
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec: {containers: [{name: c, image: x}]}
---
{"apiVersion":"v1","kind":"List","items":[{"kind":"Pod","metadata":{"name":"db","namespace":"prod","uid":"u1","labels":{"app":"db"}}}]}
---
`
	pods, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 {
		t.Fatalf("got %d pods, want 2: %+v", len(pods), pods)
	}
	if p := pods[0]; p.Namespace != "default" || p.Name != "web" || p.Labels["app"] != "web" {
		t.Errorf("first pod: %+v", p)
	}
	if p := pods[1]; p.Namespace != "prod" || p.Name != "db" || p.UID != "u1" || p.Labels["app"] != "db" {
		t.Errorf("second pod: %+v", p)
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"kind: Pod\nmetadata: {}\n":                            "document 1: Pod without metadata.name",
		"kind: Pod\nmetadata: {name: a}\n---\nkind: Service\n": "document 2: kind \"Service\"",
		"metadata: {name: a}\n":                                "no kind",
		"kind: [\n":                                            "not YAML",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
}
