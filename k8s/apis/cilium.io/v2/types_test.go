package v2_test

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/labels"
)

func TestSchemeKnowsTheKinds(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for obj, kind := range map[runtime.Object]string{
		&v2.CiliumNetworkPolicy{}:                v2.KindCiliumNetworkPolicy,
		&v2.CiliumClusterwideNetworkPolicy{}:     v2.KindCiliumClusterwideNetworkPolicy,
		&v2.CiliumEndpoint{}:                     v2.KindCiliumEndpoint,
		&v2.CiliumIdentity{}:                     v2.KindCiliumIdentity,
		&v2.CiliumNode{}:                         v2.KindCiliumNode,
		&v2.CiliumNetworkPolicyList{}:            v2.KindCiliumNetworkPolicy + "List",
		&v2.CiliumClusterwideNetworkPolicyList{}: v2.KindCiliumClusterwideNetworkPolicy + "List",
		&v2.CiliumEndpointList{}:                 v2.KindCiliumEndpoint + "List",
		&v2.CiliumIdentityList{}:                 v2.KindCiliumIdentity + "List",
		&v2.CiliumNodeList{}:                     v2.KindCiliumNode + "List",
	} {
		gvks, _, err := scheme.ObjectKinds(obj)
		if err != nil {
			t.Errorf("%T: %v", obj, err)
			continue
		}
		if want := (schema.GroupVersionKind{Group: "cilium.io", Version: "v2", Kind: kind}); len(gvks) != 1 || gvks[0] != want {
			t.Errorf("%T: kinds %v, want %v", obj, gvks, want)
		}
	}
	if got := v2.Kind("CiliumEndpoint").String(); got != "CiliumEndpoint.cilium.io" {
		t.Errorf("Kind: %s", got)
	}
	if got := v2.Resource(v2.ResourceCiliumEndpoints).String(); got != "ciliumendpoints.cilium.io" {
		t.Errorf("Resource: %s", got)
	}
}

// A CiliumIdentity is laid out as Cilium lays it out: named by the
// number, every label in security-labels, the k8s ones (those Kubernetes
// accepts as labels) in the metadata without their source.
func TestNewCiliumIdentity(t *testing.T) {
	long := strings.Repeat("x", 64) // too long for a Kubernetes label value or name
	ls := labels.New(
		labels.Label{Source: labels.SourceK8s, Key: "app", Value: "web"},
		labels.Label{Source: labels.SourceK8s, Key: labels.NamespaceKey, Value: "shop"},
		labels.Label{Source: labels.SourceK8s, Key: "io.cilium.k8s.policy.cluster", Value: "default"},
		labels.Label{Source: labels.SourceK8s, Key: "build", Value: long},
		labels.Label{Source: labels.SourceK8s, Key: long},
		labels.Label{Source: labels.SourceContainer, Key: "role", Value: "front"},
		labels.Label{Source: labels.SourceReserved, Key: "init"},
	)
	ci := v2.NewCiliumIdentity(256, ls)
	if ci.Name != "256" || ci.Kind != v2.KindCiliumIdentity || ci.APIVersion != "cilium.io/v2" {
		t.Errorf("object: %s %s %s", ci.APIVersion, ci.Kind, ci.Name)
	}
	wantSec := map[string]string{}
	for _, l := range ls {
		wantSec[l.Source+":"+l.Key] = l.Value
	}
	if !maps.Equal(ci.SecurityLabels, wantSec) {
		t.Errorf("security-labels %v, want %v", ci.SecurityLabels, wantSec)
	}
	wantMeta := map[string]string{
		"app":                          "web",
		"io.kubernetes.pod.namespace":  "shop",
		"io.cilium.k8s.policy.cluster": "default",
	}
	if !maps.Equal(ci.Labels, wantMeta) {
		t.Errorf("metadata labels %v, want %v", ci.Labels, wantMeta)
	}
	b, err := json.Marshal(ci)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["security-labels"]; !ok {
		t.Errorf("security-labels is not at the top level: %s", b)
	}
}

func TestNewEndpointPolicyDirection(t *testing.T) {
	for _, c := range []struct {
		enforcing, disabled bool
		want                v2.EndpointPolicyDirection
	}{
		{true, false, v2.EndpointPolicyDirection{Enforcing: true, State: v2.PolicyEnforcing}},
		{false, false, v2.EndpointPolicyDirection{Enforcing: false, State: v2.PolicyNonEnforcing}},
		{true, true, v2.EndpointPolicyDirection{Enforcing: false, State: v2.PolicyDisabled}},
		{false, true, v2.EndpointPolicyDirection{Enforcing: false, State: v2.PolicyDisabled}},
	} {
		if got := v2.NewEndpointPolicyDirection(c.enforcing, c.disabled); *got != c.want {
			t.Errorf("NewEndpointPolicyDirection(%v, %v) = %+v, want %+v", c.enforcing, c.disabled, *got, c.want)
		}
	}
}
