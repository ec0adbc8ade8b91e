package podmanifest

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
)

func parse(t *testing.T, input string) []models.Pod {
	t.Helper()
	ps, err := Parse("pods.yaml", []byte(input), "default")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	out := []models.Pod{}
	for _, p := range ps {
		out = append(out, p.Pod)
	}
	return out
}

func TestManifestMultiDocumentYAML(t *testing.T) {
	data, err := os.ReadFile("testdata/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Parse("testdata/pods.yaml", data, "default")
	if err != nil {
		t.Fatal(err)
	}
	want := []models.Pod{
		{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web", "app.kubernetes.io/part-of": "shop"}},
		{Namespace: "storage", Name: "db", UID: "6f1c2a4e-0000-4000-8000-000000000001",
			Labels: map[string]string{"app": "db"}, Annotations: map[string]string{"team": "storage"}},
		{Namespace: "default", Name: "cache", Labels: map[string]string{"app": "cache"}},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d pods, want %d", len(ps), len(want))
	}
	wantOrigins := []string{
		"testdata/pods.yaml: document 1 (line 2)",
		"testdata/pods.yaml: document 2 (line 14)",
		"testdata/pods.yaml: document 3 (line 25), item 1",
	}
	for i := range want {
		if !reflect.DeepEqual(ps[i].Pod, want[i]) {
			t.Errorf("pod %d = %+v, want %+v", i, ps[i].Pod, want[i])
		}
		if ps[i].Origin != wantOrigins[i] {
			t.Errorf("pod %d origin %q, want %q", i, ps[i].Origin, wantOrigins[i])
		}
	}
}

func TestManifestJSON(t *testing.T) {
	// One object, pretty-printed as kubectl -o json does.
	got := parse(t, `{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
  "spec": {"containers": [{"name": "web", "image": "nginx"}]},
  "status": {"phase": "Running"}
}`)
	want := []models.Pod{{Namespace: "shop", Name: "web", UID: "u-1", Labels: map[string]string{"app": "web"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	// Several objects one after another.
	got = parse(t, `{"kind":"Pod","metadata":{"name":"a"}}
{"kind":"Pod","metadata":{"name":"b","labels":{"x":"1"}}}`)
	if len(got) != 2 || got[0].Name != "a" || got[1].Labels["x"] != "1" {
		t.Fatalf("JSON stream: %+v", got)
	}

	// kubectl get pods -o json: a List.
	got = parse(t, `{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
		{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"n1"}},
		{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","namespace":"n2","annotations":{"k":"v"}}}]}`)
	if len(got) != 2 || got[1].Namespace != "n2" || got[1].Annotations["k"] != "v" {
		t.Fatalf("JSON List: %+v", got)
	}
}

func TestManifestYAMLForms(t *testing.T) {
	cases := map[string]struct {
		input string
		names []string
	}{
		"flow mapping that is not JSON": {"{kind: Pod, metadata: {name: flow}}\n", []string{"flow"}},
		"leading marker and comments":   {"# pods\n---\n# nothing yet\n---\nkind: Pod\nmetadata:\n  name: a\n---\n", []string{"a"}},
		"content on the marker line":    {"--- {kind: Pod, metadata: {name: a}}\n--- {kind: Pod, metadata: {name: b}}\n", []string{"a", "b"}},
		"document end markers":          {"kind: Pod\nmetadata: {name: a}\n...\n---\nkind: Pod\nmetadata: {name: b}\n...\n", []string{"a", "b"}},
		"CRLF and BOM":                  {"\ufeffkind: Pod\r\nmetadata:\r\n  name: a\r\n---\r\nkind: Pod\r\nmetadata:\r\n  name: b\r\n", []string{"a", "b"}},
		"PodList items without kind":    {"apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n- metadata: {name: b}\n", []string{"a", "b"}},
		"empty List":                    {"apiVersion: v1\nkind: List\nitems: []\n", nil},
		"dashes inside a value":         {"kind: Pod\nmetadata:\n  name: a\n  annotations:\n    note: |\n      ---\n      not a marker\n", []string{"a"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var names []string
			for _, p := range parse(t, c.input) {
				names = append(names, p.Name)
			}
			if !reflect.DeepEqual(names, c.names) {
				t.Fatalf("names %v, want %v", names, c.names)
			}
		})
	}
}

func TestManifestErrors(t *testing.T) {
	cases := []struct {
		name, input, want string
	}{
		{"YAML syntax, with the file's line", "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata:\n  name: b\n   labels: x\n",
			"pods.yaml: document 2 (line 4): invalid YAML: yaml: line 7: mapping values are not allowed in this context"},
		{"no kind", "metadata: {name: a}\n", "pods.yaml: document 1 (line 1): no kind: want a Kubernetes Pod or List manifest"},
		{"other kind", "kind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
			`pods.yaml: document 2 (line 4): kind "Service": only Pod and List manifests carry pod labels`},
		{"no name", "kind: Pod\nmetadata:\n  labels: {app: a}\n", "pods.yaml: document 1 (line 1): metadata.name is required"},
		{"generateName", "kind: Pod\nmetadata:\n  generateName: web-\n", `metadata.name is required (generateName "web-" needs the Kubernetes API server)`},
		{"bad name", "kind: Pod\nmetadata: {name: Web}\n", `pods.yaml: document 1 (line 1): invalid pod name "Web"`},
		{"bad namespace", "kind: Pod\nmetadata: {name: web, namespace: a.b}\n", `pod "web": invalid namespace "a.b"`},
		{"bad label value", "kind: Pod\nmetadata:\n  name: web\n  labels:\n    app: \"web server\"\n",
			`pods.yaml: document 1 (line 1): pod default/web: label "k8s:app=web server": invalid value "web server"`},
		{"label value not a string", "kind: Pod\nmetadata:\n  name: web\n  labels:\n    version: 2\n",
			"pods.yaml: document 1 (line 1): not a Kubernetes object: json: cannot unmarshal number into Go struct field manifestMeta.metadata.labels of type string"},
		{"apiVersion", "apiVersion: apps/v1\nkind: Pod\nmetadata: {name: web}\n", `pod "web" has apiVersion "apps/v1", want v1`},
		{"list item not a Pod", "kind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n- kind: ConfigMap\n  metadata: {name: b}\n",
			`pods.yaml: document 1 (line 1), item 2: kind "ConfigMap": a List may only hold Pods`},
		{"list item invalid", "kind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n- kind: Pod\n  metadata: {}\n",
			"pods.yaml: document 1 (line 1), item 2: metadata.name is required"},
		{"duplicate", "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: a, namespace: default}\n",
			"pods.yaml: document 2 (line 4): pod default/a is already defined at pods.yaml: document 1 (line 1)"},
		{"not an object", "- kind: Pod\n", "pods.yaml: document 1 (line 1): not a Kubernetes object"},
		{"JSON garbage after an object", `{"kind":"Pod","metadata":{"name":"a"}} {"kind":`, "pods.yaml: document 1 (line 1): invalid JSON after object 1"},
		{"second JSON object", `{"kind":"Pod","metadata":{"name":"a"}} {"kind":"Pod","metadata":{"name":"B"}}`,
			`pods.yaml: document 1 (line 1), object 2: invalid pod name "B"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("pods.yaml", []byte(c.input), "default")
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}
