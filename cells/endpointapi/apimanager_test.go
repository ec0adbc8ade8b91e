package endpointapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// startAPIManager runs the endpoint manager and the endpoint API on a
// temporary state dir, without the API server.
func startAPIManager(t *testing.T) (*EndpointAPIManager, *statedb.DB, statedb.RWTable[*tables.Pod]) {
	t.Helper()
	var (
		m    *EndpointAPIManager
		db   *statedb.DB
		pods statedb.RWTable[*tables.Pod]
	)
	celltest.New(t, "",
		endpointmanager.Cell, Cell,
		cell.Invoke(func(am *EndpointAPIManager, d *statedb.DB, p statedb.RWTable[*tables.Pod]) { m, db, pods = am, d, p }),
	).StartTest()
	return m, db, pods
}

func request(cid, ip string) *models.EndpointChangeRequest {
	return &models.EndpointChangeRequest{ContainerID: cid, ContainerInterfaceName: "eth0",
		Addressing: &models.AddressPair{IPv4: ip}, K8sNamespace: "default", K8sPodName: "web"}
}

// wantStatus checks err's status and that its message holds want.
func wantStatus(t *testing.T, what string, err error, code int, want string) {
	t.Helper()
	if apiserver.StatusOf(err) != code || err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v (status %d), want %d and %q", what, err, apiserver.StatusOf(err), code, want)
	}
}

func TestCreateEndpointAnswers(t *testing.T) {
	m, db, pods := startAPIManager(t)
	wtxn := db.WriteTxn(pods)
	pods.Insert(wtxn, &tables.Pod{Namespace: "default", Name: "web", UID: "u1", Labels: map[string]string{"app": "web"}})
	wtxn.Commit()

	// A known pod's labels are the endpoint's from its creation.
	ep, err := m.CreateEndpoint(context.Background(), "0", request("c1", "10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ep.LabelsResolved || ep.K8sUID != "u1" || ep.PodLabels.String() != "k8s:app=web;k8s:io.kubernetes.pod.namespace=default" {
		t.Fatalf("created endpoint: %+v", ep)
	}

	// What another endpoint holds is a 409 naming it; an ID a request
	// names is a 409 if in use, else a 400.
	_, err = m.CreateEndpoint(context.Background(), "0", request("c1", "10.0.0.2"))
	wantStatus(t, "duplicate attachment", err, http.StatusConflict, "CNI attachment c1:eth0 is already in use by endpoint")
	_, err = m.CreateEndpoint(context.Background(), "0", request("c2", "10.0.0.1"))
	wantStatus(t, "duplicate IP", err, http.StatusConflict, "IP 10.0.0.1 is already in use by endpoint")
	_, err = m.CreateEndpoint(context.Background(), itoa(ep.ID), request("c3", "10.0.0.3"))
	wantStatus(t, "explicit ID in use", err, http.StatusConflict, "endpoint ID "+itoa(ep.ID)+" is already in use by endpoint "+itoa(ep.ID)+" (pod default/web), container c1")
	free := ep.ID%endpointmanager.MaxEndpointID + 1
	_, err = m.CreateEndpoint(context.Background(), itoa(free), request("c3", "10.0.0.3"))
	wantStatus(t, "explicit free ID", err, http.StatusBadRequest, "new endpoints get their ID from the agent, send 0")

	// Reserved labels are refused on creation and on PATCH alike.
	req := request("c4", "10.0.0.4")
	req.Labels = []string{"reserved:host"}
	_, err = m.CreateEndpoint(context.Background(), "0", req)
	wantStatus(t, "create with a reserved label", err, http.StatusBadRequest, `invalid endpoint: labels: "reserved:host": reserved labels are the agent's to give`)
	_, err = m.PatchLabels(itoa(ep.ID), &models.LabelsPatch{Add: []string{"reserved:host"}})
	wantStatus(t, "patch with a reserved label", err, http.StatusBadRequest, `add: "reserved:host": reserved labels are the agent's to give`)
	_, err = m.PatchLabels("container-id:nope", &models.LabelsPatch{Add: []string{"tier=a"}})
	wantStatus(t, "patch of a missing endpoint", err, http.StatusNotFound, "endpoint not found: container-id:nope")
	if ep, err := m.PatchLabels("container-id:c1", &models.LabelsPatch{Add: []string{"tier=a"}}); err != nil || ep.RequestLabels.String() != "container:tier=a" {
		t.Fatalf("patch: %v %+v", err, ep)
	}
}

func itoa(id uint16) string { return strconv.Itoa(int(id)) }
