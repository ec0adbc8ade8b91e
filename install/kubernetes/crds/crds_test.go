package crds_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	schemavalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/install/kubernetes/crds"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

type column struct{ name, typ, jsonPath string }

// expected is each CRD as Cilium names it and as kubectl users know it.
var expected = map[string]struct {
	goType     reflect.Type
	resource   string
	singular   string
	shortNames []string
	categories []string
	namespaced bool
	status     bool // status subresource
	columns    []column
}{
	v2.KindCiliumNetworkPolicy: {
		goType:   reflect.TypeFor[v2.CiliumNetworkPolicy](),
		resource: v2.ResourceCiliumNetworkPolicies, singular: "ciliumnetworkpolicy",
		shortNames: []string{"cnp", "ciliumnp"}, categories: []string{"cilium", "ciliumpolicy"},
		namespaced: true, status: true,
		columns: []column{{"Age", "date", ".metadata.creationTimestamp"}},
	},
	v2.KindCiliumClusterwideNetworkPolicy: {
		goType:   reflect.TypeFor[v2.CiliumClusterwideNetworkPolicy](),
		resource: v2.ResourceCiliumClusterwideNetworkPolicies, singular: "ciliumclusterwidenetworkpolicy",
		shortNames: []string{"ccnp"}, categories: []string{"cilium", "ciliumpolicy"},
		status:  true,
		columns: []column{{"Age", "date", ".metadata.creationTimestamp"}},
	},
	v2.KindCiliumEndpoint: {
		goType:   reflect.TypeFor[v2.CiliumEndpoint](),
		resource: v2.ResourceCiliumEndpoints, singular: "ciliumendpoint",
		shortNames: []string{"cep", "ciliumep"}, categories: []string{"cilium"},
		namespaced: true,
		columns: []column{
			{"Endpoint ID", "integer", ".status.id"},
			{"Identity ID", "integer", ".status.identity.id"},
			{"Ingress Enforcement", "string", ".status.policy.ingress.state"},
			{"Egress Enforcement", "string", ".status.policy.egress.state"},
			{"Visibility Policy", "string", ".status.visibility-policy-status"},
			{"Endpoint State", "string", ".status.state"},
			{"IPv4", "string", ".status.networking.addressing[0].ipv4"},
			{"IPv6", "string", ".status.networking.addressing[0].ipv6"},
		},
	},
	v2.KindCiliumIdentity: {
		goType:   reflect.TypeFor[v2.CiliumIdentity](),
		resource: v2.ResourceCiliumIdentities, singular: "ciliumidentity",
		shortNames: []string{"ciliumid"}, categories: []string{"cilium"},
		status: true,
		columns: []column{
			// Cilium reads the namespace from the object's metadata labels
			// (the k8s-source labels without their source), not from
			// security-labels.
			{"Namespace", "string", `.metadata.labels.io\.kubernetes\.pod\.namespace`},
			{"Age", "date", ".metadata.creationTimestamp"},
		},
	},
	v2.KindCiliumNode: {
		goType:   reflect.TypeFor[v2.CiliumNode](),
		resource: v2.ResourceCiliumNodes, singular: "ciliumnode",
		shortNames: []string{"cn", "ciliumn"}, categories: []string{"cilium"},
		status: true,
		columns: []column{
			{"InternalIP", "string", `.spec.addresses[?(@.type=="InternalIP")].ip`},
			{"Age", "date", ".metadata.creationTimestamp"},
		},
	},
}

// notInGo are schema properties the Go types deliberately lack, with why.
var notInGo = map[string]string{
	"CiliumEndpoint status.visibility-policy-status": "Cilium's Visibility Policy column reads it; Membrane never writes it",
}

func load(t *testing.T) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	list, err := crds.CustomResourceDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, crd := range list {
		byKind[crd.Spec.Names.Kind] = crd
	}
	if len(byKind) != len(expected) || len(list) != len(expected) {
		t.Fatalf("got %d CRDs (%d kinds), want one for each of %d kinds", len(list), len(byKind), len(expected))
	}
	return byKind
}

func TestNamesColumnsAndVersions(t *testing.T) {
	for kind, crd := range load(t) {
		want, ok := expected[kind]
		if !ok {
			t.Errorf("unexpected CRD for %s", kind)
			continue
		}
		n := crd.Spec.Names
		if crd.Name != want.resource+"."+v2.GroupName || crd.Spec.Group != v2.GroupName {
			t.Errorf("%s: name %s, group %s", kind, crd.Name, crd.Spec.Group)
		}
		if n.Plural != want.resource || n.Singular != want.singular || n.ListKind != kind+"List" {
			t.Errorf("%s: names %+v", kind, n)
		}
		if !slices.Equal(n.ShortNames, want.shortNames) || !slices.Equal(n.Categories, want.categories) {
			t.Errorf("%s: short names %v, categories %v; want %v, %v", kind, n.ShortNames, n.Categories, want.shortNames, want.categories)
		}
		wantScope := apiextensionsv1.ClusterScoped
		if want.namespaced {
			wantScope = apiextensionsv1.NamespaceScoped
		}
		if crd.Spec.Scope != wantScope {
			t.Errorf("%s: scope %s, want %s", kind, crd.Spec.Scope, wantScope)
		}
		if len(crd.Spec.Versions) != 1 {
			t.Errorf("%s: %d versions, want v2 only", kind, len(crd.Spec.Versions))
			continue
		}
		v := crd.Spec.Versions[0]
		if v.Name != v2.SchemeGroupVersion.Version || !v.Served || !v.Storage {
			t.Errorf("%s: version %s served=%v storage=%v, want v2 served and stored", kind, v.Name, v.Served, v.Storage)
		}
		if got := v.Subresources != nil && v.Subresources.Status != nil; got != want.status {
			t.Errorf("%s: status subresource %v, want %v (as in Cilium)", kind, got, want.status)
		}
		var cols []column
		for _, c := range v.AdditionalPrinterColumns {
			cols = append(cols, column{c.Name, c.Type, c.JSONPath})
		}
		if !slices.Equal(cols, want.columns) {
			t.Errorf("%s: printer columns\n got %q\nwant %q", kind, cols, want.columns)
		}
		// A column reads a field the schema declares (or the metadata).
		for _, c := range want.columns {
			if err := resolve(v.Schema.OpenAPIV3Schema, c.jsonPath); err != nil {
				t.Errorf("%s: column %q: %v", kind, c.name, err)
			}
		}
	}
}

// The CRDs pass the API server's own validation of a CRD on create
// (structural schemas, names, printer column paths).
func TestAPIServerAcceptsTheCRDs(t *testing.T) {
	for kind, crd := range load(t) {
		internal := toInternal(t, crd)
		internal.Status.StoredVersions = []string{"v2"} // the API server sets it on create
		for _, err := range validation.ValidateCustomResourceDefinition(context.Background(), internal) {
			t.Errorf("%s: %v", kind, err)
		}
	}
}

// The Go types and the schemas agree on every field the Go types have:
// same JSON name, same type, required fields never omitted by Go; and
// the schemas have nothing the Go types lack but what notInGo lists. A
// Go field the schema lacks would be pruned by the API server, silently.
func TestGoTypesMatchSchemas(t *testing.T) {
	for kind, crd := range load(t) {
		c := &checker{t: t, kind: kind}
		c.check("", expected[kind].goType, *crd.Spec.Versions[0].Schema.OpenAPIV3Schema)
	}
	for path := range notInGo {
		kind, _, _ := strings.Cut(path, " ")
		if _, ok := expected[kind]; !ok {
			t.Errorf("notInGo: %s names no kind", path)
		}
	}
}

// Objects built with the Go types, as the agent will write them, are
// valid under the schemas and lose nothing to pruning.
func TestGoObjectsAreValid(t *testing.T) {
	ls := labels.New(
		labels.Label{Source: labels.SourceK8s, Key: "app", Value: "web"},
		labels.Label{Source: labels.SourceK8s, Key: labels.NamespaceKey, Value: "shop"},
	)
	objects := []runtime.Object{
		&v2.CiliumEndpoint{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"},
			Status: v2.EndpointStatus{
				ID:       1234,
				Identity: &v2.EndpointIdentity{ID: 256, Labels: ls.Strings()},
				Networking: &v2.EndpointNetworking{
					Addressing: []v2.AddressPair{{IPv4: "10.200.0.7", IPv6: "fd00:200::7"}},
					NodeIP:     "192.168.1.10",
				},
				State: string(tables.StateReady),
				Policy: &v2.EndpointPolicy{
					Ingress: v2.NewEndpointPolicyDirection(true, false),
					Egress:  v2.NewEndpointPolicyDirection(false, false),
				},
			},
		},
		&v2.CiliumEndpoint{ // before the agent knows much
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop"},
			Status: v2.EndpointStatus{
				ID: 7, State: string(tables.StateWaitingForIdentity),
				Networking: &v2.EndpointNetworking{Addressing: []v2.AddressPair{}},
			},
		},
		v2.NewCiliumIdentity(256, ls),
		&v2.CiliumNode{
			ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
			Spec: v2.NodeSpec{
				Addresses: []v2.NodeAddress{{Type: v2.NodeInternalIP, IP: "192.168.1.10"}, {Type: v2.NodeExternalIP, IP: "203.0.113.10"}},
				IPAM:      v2.IPAMSpec{PodCIDRs: []string{"10.200.0.0/24", "fd00:200::/64"}},
			},
		},
		policyObject(t, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {role: frontend}}]
    toPorts: [{ports: [{port: 80, protocol: TCP}]}]
specs:
- endpointSelector: {}
  egressDeny: [{toCIDR: [169.254.169.254/32]}]
  futureField: {kept: true}
`, &v2.CiliumNetworkPolicy{}),
		policyObject(t, `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: dns}
spec:
  endpointSelector: {}
  egress: [{toEntities: [cluster], toPorts: [{ports: [{port: "53"}]}]}]
`, &v2.CiliumClusterwideNetworkPolicy{}),
	}
	crdsByKind := load(t)
	for _, obj := range objects {
		kind := reflect.TypeOf(obj).Elem().Name()
		crd := crdsByKind[kind]
		internal := toInternal(t, crd)
		var props *apiextensions.JSONSchemaProps
		if internal.Spec.Validation != nil { // one version: its schema is hoisted
			props = internal.Spec.Validation.OpenAPIV3Schema
		} else {
			props = internal.Spec.Versions[0].Schema.OpenAPIV3Schema
		}
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		var u map[string]any
		if err := utiljson.Unmarshal(b, &u); err != nil {
			t.Fatal(err)
		}
		u["apiVersion"], u["kind"] = v2.SchemeGroupVersion.String(), kind

		s, err := structuralschema.NewStructural(props)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if pruned := pruning.PruneWithOptions(u, s, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(pruned) > 0 {
			t.Errorf("%s: the API server would drop %v", kind, pruned)
		}
		validator, _, err := schemavalidation.NewSchemaValidator(props)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		for _, err := range schemavalidation.ValidateCustomResource(nil, u, validator) {
			t.Errorf("%s: %v\n%s", kind, err, b)
		}
	}
}

// Every lifecycle state Membrane has is one the CEP schema accepts (the
// schema's enum is Cilium's).
func TestEndpointStatesFitTheSchema(t *testing.T) {
	enum := map[string]bool{}
	status := load(t)[v2.KindCiliumEndpoint].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"]
	for _, e := range status.Properties["state"].Enum {
		var s string
		if err := json.Unmarshal(e.Raw, &s); err != nil {
			t.Fatal(err)
		}
		enum[s] = true
	}
	for _, s := range []tables.EndpointState{
		tables.StateWaitingForIdentity, tables.StateWaitingToRegenerate, tables.StateRegenerating,
		tables.StateReady, tables.StateDisconnecting, tables.StateDisconnected,
		tables.StateRestoring, tables.StateInvalid, tables.StateNotReady,
	} {
		if !enum[string(s)] {
			t.Errorf("state %q is not in the CiliumEndpoint schema's enum: the API server would refuse the endpoint's status", s)
		}
	}
}

func policyObject(t *testing.T, doc string, into runtime.Object) runtime.Object {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatal(err)
	}
	return into
}

func toInternal(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) *apiextensions.CustomResourceDefinition {
	t.Helper()
	scheme := runtime.NewScheme()
	install.Install(scheme)
	crd = crd.DeepCopy()
	scheme.Default(crd) // as the API server does before validating
	internal := &apiextensions.CustomResourceDefinition{}
	if err := scheme.Convert(crd, internal, nil); err != nil {
		t.Fatal(err)
	}
	return internal
}
