package endpoints

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-net/membrane/statedb/tables"
)

func TestObject(t *testing.T) {
	row := &tables.CiliumEndpoint{
		Namespace: "prod", Name: "web-0", PodUID: "uid-1", EndpointID: 12, Identity: 300,
		IdentityLabels: []string{"k8s:app=web"}, IPv4: netip.MustParseAddr("10.0.0.7"),
		State: tables.StateReady, IngressEnforcing: true,
	}
	o := object(row, "node-1")
	if o.Labels[NodeLabel] != "node-1" || ownerUID(o) != "uid-1" || o.OwnerReferences[0].Kind != "Pod" {
		t.Errorf("metadata %+v", o.ObjectMeta)
	}
	s := o.Status
	if s.ID != 12 || s.Identity.ID != 300 || s.State != "ready" || s.Networking.NodeIP != "node-1" ||
		s.Networking.Addressing[0].IPv4 != "10.0.0.7" || s.Networking.Addressing[0].IPv6 != "" ||
		s.Policy.Ingress.State != "enforcing" || s.Policy.Egress.State != "non-enforcing" || s.Policy.Egress.Enforcing {
		t.Errorf("status %+v", s)
	}

	// What others added is kept; only what the agent owns counts.
	have := o.DeepCopy()
	have.Labels["team"] = "a"
	have.OwnerReferences = append(have.OwnerReferences, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "x", UID: "rs"})
	if !upToDate(have, o) {
		t.Error("a CEP with extra labels and owners is not up to date")
	}

	// The pod was recreated: the owner is repaired, the rest kept.
	row.PodUID = "uid-2"
	want := object(row, "node-1")
	if upToDate(have, want) {
		t.Fatal("a CEP owned by an earlier pod is up to date")
	}
	m := merge(have, want)
	if ownerUID(m) != "uid-2" || len(m.OwnerReferences) != 2 || m.Labels["team"] != "a" || !upToDate(m, want) {
		t.Errorf("merged %+v", m.ObjectMeta)
	}
	if ownerUID(have) != "uid-1" {
		t.Error("merge changed its input")
	}
}
