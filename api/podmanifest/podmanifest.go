// Package podmanifest reads Kubernetes Pod manifests (YAML or JSON, several
// documents per file separated by "---", or a kind: List) into the pod
// metadata the agent needs: namespace, name, uid, labels, annotations.
// Everything else in a manifest (spec, status) is ignored; documents of
// other kinds are an error naming the document.
package podmanifest

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/models"
)

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		UID         string            `json:"uid"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Items []yamlRaw `json:"items"`
}

// yamlRaw keeps a List item undecoded until we know its kind.
type yamlRaw struct{ data []byte }

func (r *yamlRaw) UnmarshalJSON(b []byte) error { r.data = append([]byte(nil), b...); return nil }

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// Parse returns the pods of every document in data.
func Parse(data []byte) ([]models.Pod, error) {
	var pods []models.Pod
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		ps, err := parseDoc([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		pods = append(pods, ps...)
	}
	return pods, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func parseDoc(doc []byte) ([]models.Pod, error) {
	var o object
	if err := yaml.Unmarshal(doc, &o); err != nil {
		return nil, fmt.Errorf("not YAML/JSON: %w", err)
	}
	switch o.Kind {
	case "Pod":
		p := models.Pod{
			Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, UID: o.Metadata.UID,
			Labels: o.Metadata.Labels, Annotations: o.Metadata.Annotations,
		}
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		if p.Name == "" {
			return nil, fmt.Errorf("Pod without metadata.name")
		}
		return []models.Pod{p}, nil
	case "List", "PodList":
		var pods []models.Pod
		for i, item := range o.Items {
			ps, err := parseDoc(bytes.TrimSpace(item.data))
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i+1, err)
			}
			pods = append(pods, ps...)
		}
		return pods, nil
	case "":
		return nil, fmt.Errorf("no kind: want a Pod manifest (kind: Pod)")
	}
	return nil, fmt.Errorf("kind %q: only Pod (or a List of Pods) is understood", o.Kind)
}
