package podmanifest

import (
	"os"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/clip"
)

// Manifests are files an operator points membrane pod apply (and the
// agent's --pod-manifest) at: any bytes give valid pods or an error, never
// a panic; every pod returned has valid names, and an error does not echo
// a long input back.
func FuzzParse(f *testing.F) {
	if demo, err := os.ReadFile("testdata/pods.yaml"); err == nil {
		f.Add(demo)
	}
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}}}{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db"}}`))
	f.Add([]byte("apiVersion: v1\nkind: PodList\nitems: [{apiVersion: v1, kind: Pod, metadata: {name: a}}]\n"))
	f.Add([]byte("---\n...\n---\nkind: Deployment\n"))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: " + strings.Repeat("a", 10000) + "}\n"))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {\"\xff\": x}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pods, err := Parse("fuzz.yaml", data, "default")
		if err != nil {
			// The message names the document and quotes clipped input;
			// a long YAML error line is the decoder's, bounded too.
			if len(err.Error()) > 16*clip.Max+1000 {
				t.Fatalf("error of %d bytes for %d bytes of input: %.300s", len(err.Error()), len(data), err)
			}
			return
		}
		for _, p := range pods {
			if !dnsLabelRe.MatchString(p.Namespace) || !dnsSubdomainRe.MatchString(p.Name) {
				t.Fatalf("accepted pod %q/%q", p.Namespace, p.Name)
			}
		}
	})
}
