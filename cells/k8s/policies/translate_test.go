package policies_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/membrane-net/membrane/cells/k8s/policies"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/policy/api"
)

// fromAPIServer decodes a manifest as a typed client does, then drops
// kind and apiVersion as informers hand objects out.
func fromAPIServer(t *testing.T, manifest string) runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode([]byte(manifest), nil, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	obj.GetObjectKind().SetGroupVersionKind(obj.GetObjectKind().GroupVersionKind().GroupVersion().WithKind(""))
	return obj
}

const cnp = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod, uid: u-1}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

const np = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod, uid: u-2}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}, {protocol: UDP, port: 53}]
  egress:
  - ports: [{port: dns}]
`

// Objects from the API server give exactly the rules `membrane policy
// import` gives for the same manifest, derived labels included, and the
// cached object is not changed on the way.
func TestRulesAreThoseOfTheManifest(t *testing.T) {
	for _, manifest := range []string{cnp, strings.Replace(strings.Replace(cnp, "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", 1), "namespace: prod, ", "", 1), np} {
		obj := fromAPIServer(t, manifest)
		before := obj.DeepCopyObject()
		got, err := policies.Rules(obj)
		if err != nil {
			t.Fatalf("Rules: %v", err)
		}
		want, err := api.Parse([]byte(manifest))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("rules of the object\n got %+v\nwant %+v", got, want)
		}
		if !reflect.DeepEqual(obj, before) {
			t.Errorf("Rules changed the cached object")
		}
		if !strings.Contains(strings.Join(got[0].Labels, ","), "k8s:io.cilium.k8s.policy.uid=u-") {
			t.Errorf("labels %v lack the uid", got[0].Labels)
		}
	}
	// policyTypes [Ingress]: the egress section (with its named port) is
	// ignored, as upstream.
	rules, _ := policies.Rules(fromAPIServer(t, np))
	if r := rules[0].Rule; len(r.Egress) != 0 || len(r.Ingress) != 1 {
		t.Errorf("NetworkPolicy with policyTypes [Ingress]: ingress %d, egress %d entries; want 1 and 0", len(r.Ingress), len(r.Egress))
	}
}

// What the agent refuses, with the object and the field named. The CRD
// keeps rule bodies as written, so an unknown field inside spec reaches
// the parser and is refused rather than pruned away.
func TestRefusals(t *testing.T) {
	cases := []struct {
		name, manifest, want string
		unsupported          bool
	}{
		{"unknown field in a CNP rule", strings.Replace(cnp, "fromEndpoints", "fromEndpoint", 1),
			`CiliumNetworkPolicy "prod/web": spec.ingress[0].fromEndpoint: unknown field (did you mean "fromEndpoints"?)`, false},
		{"invalid selector", strings.Replace(cnp, "{matchLabels: {app: web}}", "{matchExpressions: [{key: app, operator: Equals, values: [web]}]}", 1),
			`CiliumNetworkPolicy "prod/web": spec.endpointSelector.matchExpressions[0].operator: unknown operator "Equals"`, false},
		{"L7 section", strings.Replace(cnp, `protocol: TCP}]}]`, `protocol: TCP}], rules: {http: [{method: GET}]}}]`, 1),
			`CiliumNetworkPolicy "prod/web": spec.ingress[0].toPorts[0].rules: L7 rules (http/dns/kafka) are not supported`, true},
		{"named port in a NetworkPolicy", strings.Replace(np, "{port: 80}", "{port: http}", 1),
			`NetworkPolicy "prod/web": spec.ingress[0].ports[0].port: named port "http" is not supported`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules, err := policies.Rules(fromAPIServer(t, c.manifest))
			if err == nil {
				t.Fatalf("accepted: %+v", rules)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nwant it to contain %q", err, c.want)
			}
			if errors.Is(err, api.ErrUnsupported) != c.unsupported {
				t.Errorf("errors.Is(ErrUnsupported) = %v, want %v", !c.unsupported, c.unsupported)
			}
			for _, kept := range []bool{true, false} {
				msg := policies.RefusalMessage(err, kept)
				if !strings.Contains(msg, c.want) || len(msg) > 1024 {
					t.Errorf("event message %q does not name the field (or is too long)", msg)
				}
			}
		})
	}
	if _, err := policies.Rules(&networkingv1.NetworkPolicyList{}); err == nil {
		t.Error("a list is not a policy object")
	}
}
