// Package crds holds the CustomResourceDefinitions of the cilium.io/v2
// objects Membrane uses (k8s/apis/cilium.io/v2): the YAML files beside
// this one, which `kubectl apply -f install/kubernetes/crds/` installs,
// embedded in the binary so that the agent can register them when it
// starts.
//
// The names, short names, printer columns and field names are Cilium's,
// so kubectl habits and manifests carry over; the schemas declare only
// the fields Membrane uses (an object Membrane writes is valid under
// Cilium's CRDs too). The tests check them against the Go types, field by
// field, and against the API server's own CRD validation.
package crds

import (
	"embed"
	"fmt"
	"io/fs"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var files embed.FS

// CustomResourceDefinitions returns the CRDs, one per YAML file in name
// order, freshly parsed: the caller may change them. The files are
// parsed strictly (an unknown field is an error), and the tests parse
// them, so an error here means a broken build.
func CustomResourceDefinitions() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return nil, fmt.Errorf("CRD %s: %w", name, err)
		}
		if gvk := crd.GroupVersionKind(); gvk != apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition") {
			return nil, fmt.Errorf("CRD %s: is a %s, want an apiextensions.k8s.io/v1 CustomResourceDefinition", name, gvk)
		}
		out = append(out, crd)
	}
	return out, nil
}
