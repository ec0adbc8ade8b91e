package endpointapi

import (
	"errors"
	"net/http"
	"net/netip"
	"testing"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

func TestParseEndpointID(t *testing.T) {
	good := []string{"1", "4095", "container-id:abc", "cni-attachment-id:abc:eth0", "pod-name:default/web", "ipv4:10.0.0.1", "ipv6:fd00::1"}
	for _, id := range good {
		if _, err := parseEndpointID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	bad := []string{"", "0", "4096", "-1", "x", "container-id:", "cni-attachment-id:abc", "pod-name:web", "ipv4:fd00::1", "ipv6:10.0.0.1", "nope:1"}
	for _, id := range bad {
		if _, err := parseEndpointID(id); !errors.Is(err, errInvalidID) {
			t.Errorf("%q: got %v, want errInvalidID", id, err)
		}
	}
}

func TestLookup(t *testing.T) {
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(eps)
	eps.Insert(wtxn, &tables.Endpoint{ID: 99, ContainerID: "c3", ContainerIfName: "eth0", IPv4: netip.MustParseAddr("10.0.0.3"),
		K8sNamespace: "default", K8sPodName: "web"})
	txn := wtxn.Commit()
	for _, id := range []string{"99", "container-id:c3", "cni-attachment-id:c3:eth0", "pod-name:default/web", "ipv4:10.0.0.3"} {
		if ep, err := lookup(eps, txn, id); err != nil || ep.ID != 99 {
			t.Errorf("lookup %s: %v %+v", id, err, ep)
		}
	}
	if _, err := lookup(eps, txn, "container-id:c4"); apiserver.StatusOf(err) != http.StatusNotFound {
		t.Errorf("lookup of a missing endpoint: %v, want 404", err)
	}
	if _, err := lookup(eps, txn, "c3"); apiserver.StatusOf(err) != http.StatusBadRequest {
		t.Errorf("lookup of an invalid ID: %v, want 400", err)
	}
}
