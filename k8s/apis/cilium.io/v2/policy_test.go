package v2_test

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/policy/api"
)

// decode reads one object the way a client of the API server does: with
// a codec built from the package's scheme.
func decode(t *testing.T, doc []byte) runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, doc)
	}
	return obj
}

func rulesOf(t *testing.T, obj runtime.Object) ([]api.ParsedRule, error) {
	t.Helper()
	switch p := obj.(type) {
	case *v2.CiliumNetworkPolicy:
		return p.Rules()
	case *v2.CiliumClusterwideNetworkPolicy:
		return p.Rules()
	}
	t.Fatalf("%T is not a policy", obj)
	return nil, nil
}

// A policy read from the API server gives the rules `PUT /v1/policy`
// gives for the same manifest: same rules, namespace, derived labels.
func TestRulesAreWhatTheDocumentParsesTo(t *testing.T) {
	data, err := os.ReadFile("testdata/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(data, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("want 2 documents, got %d", len(docs))
	}
	for _, doc := range docs {
		obj := decode(t, doc)
		got, err := rulesOf(t, obj)
		if err != nil {
			t.Fatalf("%T.Rules: %v", obj, err)
		}
		want, err := api.Parse(doc)
		if err != nil {
			t.Fatalf("api.Parse: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%T: Rules() differs from api.Parse of the manifest\n got: %+v\nwant: %+v", obj, got, want)
		}
	}

	cnp := decode(t, docs[0]).(*v2.CiliumNetworkPolicy)
	rules, _ := cnp.Rules()
	if len(rules) != 2 {
		t.Fatalf("want 2 rules, got %d", len(rules))
	}
	for _, r := range rules {
		if r.Namespace != "shop" {
			t.Errorf("namespace %q, want shop", r.Namespace)
		}
		for _, l := range []string{
			"k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
			"k8s:io.cilium.k8s.policy.name=checkout-api",
			"k8s:io.cilium.k8s.policy.namespace=shop",
			"k8s:io.cilium.k8s.policy.uid=0b4fd2c6-35a3-4d7e-9a0c-5e0c1f3a9b21",
		} {
			if !slices.Contains(r.Labels, l) {
				t.Errorf("rule labels %v lack %s", r.Labels, l)
			}
		}
		if r.Object == nil || !r.Object.Owns(r.Labels) {
			t.Errorf("rule not owned by its object %v", r.Object)
		}
	}
	if got := rules[1].Rule.Egress[0].ToPorts[0].Ports[0]; got.Port != "postgresql" || got.Protocol != "ANY" {
		t.Errorf("named port in canonical form: %+v", got)
	}

	ccnp := decode(t, docs[1]).(*v2.CiliumClusterwideNetworkPolicy)
	rules, _ = ccnp.Rules()
	if len(rules) != 1 || rules[0].Namespace != "" {
		t.Fatalf("CCNP rules: %+v", rules)
	}
	if got := rules[0].Rule.EgressDeny[0].ToCIDRSet[0].Except; !slices.Equal(got, []string{"169.254.1.0/24"}) {
		t.Errorf("except: %v", got)
	}
}

// What the policy language refuses is refused here too, naming the object
// and the field, so the agent can report it against the object.
func TestRulesRefuseWhatTheParserRefuses(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string // substrings of the error
		unsup     bool     // wraps api.ErrUnsupported
	}{
		{
			name: "L7 rule",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET}]
`,
			want:  []string{`CiliumNetworkPolicy "prod/web"`, "specs[0].ingress[0].toPorts[0].rules"},
			unsup: true,
		},
		{
			name: "typo in a rule body",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: all}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpint: [{}]
`,
			want: []string{`CiliumClusterwideNetworkPolicy "all"`, "spec.ingress[0].fromEndpint", "unknown field"},
		},
		{
			name: "no rules",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: empty, namespace: prod}
`,
			want: []string{`CiliumNetworkPolicy "prod/empty"`, "spec"},
		},
		{
			name: "empty specs",
			doc: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: empty, namespace: prod}
specs: []
`,
			want: []string{`CiliumNetworkPolicy "prod/empty"`, "specs", "empty"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules, err := rulesOf(t, decode(t, []byte(c.doc)))
			if err == nil {
				t.Fatalf("accepted: %+v", rules)
			}
			var perr *api.Error
			if !errors.As(err, &perr) {
				t.Fatalf("error %T is not an *api.Error: %v", err, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrUnsupported); got != c.unsup {
				t.Errorf("errors.Is(ErrUnsupported) = %v, want %v: %v", got, c.unsup, err)
			}
		})
	}
}

// Objects from an informer's cache have no apiVersion and kind (client-go
// clears them); Rules does not need them.
func TestRulesOfObjectsWithoutTypeMeta(t *testing.T) {
	cnp := &v2.CiliumNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod"},
		Spec:       &apiextensionsv1.JSON{Raw: []byte(`{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}`)},
	}
	rules, err := cnp.Rules()
	if err != nil || len(rules) != 1 || rules[0].Namespace != "prod" {
		t.Fatalf("Rules() = %+v, %v", rules, err)
	}

	cnp.Spec.Raw = []byte(`{"endpointSelector": `) // not JSON: never from an API server
	if _, err := cnp.Rules(); err == nil || !strings.Contains(err.Error(), `CiliumNetworkPolicy "prod/web"`) {
		t.Errorf("broken rule body: %v", err)
	}
}
