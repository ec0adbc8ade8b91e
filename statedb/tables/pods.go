package tables

import (
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
)

// Pod is the metadata of one pod, as a pod metadata source (the API, a
// manifest directory, later a Kubernetes watcher) last reported it.
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Source names who wrote the row ("api", "manifest:FILE").
	Source string `json:"source"`
}

// k8sNameRe is a Kubernetes namespace or pod name (DNS-1123 subdomain).
var k8sNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// ValidK8sName reports whether s is a valid Kubernetes namespace or pod
// name: every source of pods and endpoints checks names with it, so a row
// of one is always findable by the other's key.
func ValidK8sName(s string) bool { return k8sNameRe.MatchString(s) }

// Key is "namespace/name", the primary key.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

func (p *Pod) TableHeader() []string {
	return []string{"Pod", "UID", "Labels", "Source"}
}

func (p *Pod) TableRow() []string {
	keys := slices.Sorted(maps.Keys(p.Labels))
	ls := make([]string, len(keys))
	for i, k := range keys {
		ls[i] = k + "=" + p.Labels[k]
	}
	return []string{p.Key(), p.UID, strings.Join(ls, ","), p.Source}
}

// PodKeyIndex is the primary index: "namespace/name".
var PodKeyIndex = statedb.Index[*Pod, string]{
	Name:       "key",
	FromObject: func(p *Pod) index.KeySet { return index.NewKeySet(index.String(p.Key())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

func NewPodsTable(db *statedb.DB) (statedb.RWTable[*Pod], error) {
	return statedb.NewTable(db, "pods", PodKeyIndex)
}
