// Package podmanifest reads Kubernetes Pod manifests into the pod metadata
// the agent needs (namespace, name, uid, labels, annotations): YAML or
// JSON, several documents separated by "---", several JSON objects in a
// row, and List/PodList objects. Everything else in a manifest is ignored.
// Both `membrane pod apply -f` and the agent's --pod-manifest-dir use it,
// so a file means the same thing to both.
package podmanifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/labels"

	"github.com/membrane-net/membrane/internal/clip"
)

// Pod manifests: the subset of a Kubernetes Pod (or a List of them) the
// agent needs. Only metadata matters; spec and status are ignored.
type podManifest struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   manifestMeta      `json:"metadata"`
	Items      []json.RawMessage `json:"items"`
}

type manifestMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	UID          string            `json:"uid"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
}

// Pod is a pod and where in the input it was defined (for errors).
type Pod struct {
	models.Pod
	Origin string
}

var (
	// A YAML document marker: "---" alone or followed by blanks, a
	// comment or the start of the document's content.
	docStartRe = regexp.MustCompile(`^---(\s|$)`)
	docEndRe   = regexp.MustCompile(`^\.\.\.\s*$`)

	// Kubernetes object names: DNS-1123 subdomains; namespaces: labels.
	dnsLabelRe     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomainRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Parse reads Kubernetes Pod manifests from data (named name
// in errors): YAML or JSON, several documents separated by "---", several
// JSON objects one after the other, and "kind: List" (or PodList) objects
// whose items are Pods. Pods without a namespace get defaultNamespace.
// Everything is checked before anything is returned: an error names the
// document (and list item) that is wrong.
func Parse(name string, data []byte, defaultNamespace string) ([]Pod, error) {
	var pods []Pod
	for i, doc := range splitYAMLDocuments(data) {
		where := fmt.Sprintf("%s: document %d (line %d)", name, i+1, doc.line)
		objs, err := documentObjects(doc.text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		for j, obj := range objs {
			w := where
			if len(objs) > 1 {
				w = fmt.Sprintf("%s, object %d", where, j+1)
			}
			ps, err := podsFromObject(w, obj, defaultNamespace)
			if err != nil {
				return nil, err
			}
			pods = append(pods, ps...)
		}
	}
	if err := CheckUnique(pods); err != nil {
		return nil, err
	}
	return pods, nil
}

// CheckUnique reports the first pod defined twice (in one input or across
// several), naming both places.
func CheckUnique(pods []Pod) error {
	seen := map[string]string{}
	for _, p := range pods {
		key := p.Namespace + "/" + p.Name
		if prev, ok := seen[key]; ok {
			return fmt.Errorf("%s: pod %s is already defined at %s", p.Origin, key, prev)
		}
		seen[key] = p.Origin
	}
	return nil
}

type yamlDocument struct {
	line int // the document's first line with content, 1-based
	// text is the document, preceded by as many empty lines as come before
	// it in the input, so the YAML parser's "line N" is the input's line N.
	text string
}

// splitYAMLDocuments cuts a YAML stream at its "---" and "..." markers and
// drops documents that hold nothing but blanks and comments.
func splitYAMLDocuments(data []byte) []yamlDocument {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var (
		docs []yamlDocument
		cur  strings.Builder
	)
	flush := func() {
		text := cur.String()
		cur.Reset()
		for i, l := range slices.Collect(strings.Lines(text)) {
			if !emptyYAML(l) {
				docs = append(docs, yamlDocument{line: i + 1, text: text})
				return
			}
		}
	}
	n := 0
	for l := range strings.Lines(string(data)) {
		n++
		bare := strings.TrimRight(l, "\r\n")
		switch {
		case docStartRe.MatchString(bare):
			flush()
			cur.WriteString(strings.Repeat("\n", n-1))
			// "--- {...}" carries content on the marker line.
			cur.WriteString(strings.TrimPrefix(bare, "---"))
			cur.WriteByte('\n')
		case docEndRe.MatchString(bare):
			flush()
			cur.WriteString(strings.Repeat("\n", n))
		default:
			if cur.Len() == 0 && n > 1 {
				cur.WriteString(strings.Repeat("\n", n-1))
			}
			cur.WriteString(l)
		}
	}
	flush()
	return docs
}

func emptyYAML(s string) bool {
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// documentObjects returns the JSON objects of one document: a YAML
// document is one object; a JSON document may hold several in a row.
func documentObjects(text string) ([]json.RawMessage, error) {
	trimmed := strings.TrimSpace(text)
	if strings.HasPrefix(trimmed, "{") {
		var objs []json.RawMessage
		dec := json.NewDecoder(strings.NewReader(trimmed))
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			if err != nil {
				if len(objs) == 0 {
					break // not JSON after all: a YAML flow mapping, read it as YAML
				}
				return nil, fmt.Errorf("invalid JSON after object %d: %w", len(objs), err)
			}
			objs = append(objs, raw)
		}
	}
	js, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	return []json.RawMessage{js}, nil
}

// podsFromObject turns one object (a Pod or a List of Pods) into pods.
func podsFromObject(where string, obj json.RawMessage, defaultNamespace string) ([]Pod, error) {
	var m podManifest
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("%s: not a Kubernetes object: %w", where, err)
	}
	switch m.Kind {
	case "Pod":
		p, err := podFromManifest(&m, defaultNamespace)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return []Pod{{Pod: p, Origin: where}}, nil
	case "List", "PodList":
		if m.APIVersion != "" && m.APIVersion != "v1" {
			return nil, fmt.Errorf("%s: %s has apiVersion %s, want v1", where, m.Kind, clip.Quote(m.APIVersion))
		}
		var pods []Pod
		for i, item := range m.Items {
			w := fmt.Sprintf("%s, item %d", where, i+1)
			var im podManifest
			if err := json.Unmarshal(item, &im); err != nil {
				return nil, fmt.Errorf("%s: not a Kubernetes object: %w", w, err)
			}
			if im.Kind == "" && m.Kind == "PodList" {
				im.Kind = "Pod" // items of a typed list may omit their kind
			}
			if im.Kind != "Pod" {
				return nil, fmt.Errorf("%s: kind %s: a %s may only hold Pods", w, clip.Quote(im.Kind), m.Kind)
			}
			p, err := podFromManifest(&im, defaultNamespace)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", w, err)
			}
			pods = append(pods, Pod{Pod: p, Origin: w})
		}
		return pods, nil
	case "":
		return nil, fmt.Errorf("%s: no kind: want a Kubernetes Pod or List manifest (kind: Pod)", where)
	default:
		return nil, fmt.Errorf("%s: kind %s: only Pod and List manifests carry pod labels", where, clip.Quote(m.Kind))
	}
}

func podFromManifest(m *podManifest, defaultNamespace string) (models.Pod, error) {
	if m.APIVersion != "" && m.APIVersion != "v1" {
		return models.Pod{}, fmt.Errorf("pod %s has apiVersion %s, want v1", clip.Quote(m.Metadata.Name), clip.Quote(m.APIVersion))
	}
	md := m.Metadata
	switch {
	case md.Name == "" && md.GenerateName != "":
		return models.Pod{}, fmt.Errorf("metadata.name is required (generateName %s needs the Kubernetes API server)", clip.Quote(md.GenerateName))
	case md.Name == "":
		return models.Pod{}, errors.New("metadata.name is required")
	case len(md.Name) > 253 || !dnsSubdomainRe.MatchString(md.Name):
		return models.Pod{}, fmt.Errorf("invalid pod name %s: lowercase letters, digits, '-' and '.' (a DNS subdomain)", clip.Quote(md.Name))
	}
	ns := md.Namespace
	if ns == "" {
		ns = defaultNamespace
	}
	if len(ns) > 63 || !dnsLabelRe.MatchString(ns) {
		return models.Pod{}, fmt.Errorf("pod %s: invalid namespace %s: lowercase letters, digits and '-' (a DNS label)", clip.Quote(md.Name), clip.Quote(ns))
	}
	for _, k := range slices.Sorted(maps.Keys(md.Labels)) {
		l := labels.Label{Source: labels.SourceK8s, Key: k, Value: md.Labels[k]}
		if err := l.Validate(); err != nil {
			return models.Pod{}, fmt.Errorf("pod %s/%s: %w", ns, md.Name, err)
		}
	}
	return models.Pod{
		Namespace:   ns,
		Name:        md.Name,
		UID:         md.UID,
		Labels:      md.Labels,
		Annotations: md.Annotations,
	}, nil
}
