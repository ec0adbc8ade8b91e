package endpointapi

import (
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/statedb/tables"
)

func validRequest() *models.EndpointChangeRequest {
	return &models.EndpointChangeRequest{
		ContainerID: "c1", ContainerInterfaceName: "eth0", InterfaceName: "mb1234", InterfaceIndex: 12,
		Mac: "02:00:00:00:00:01", HostMac: "02:00:00:00:00:02",
		Addressing:   &models.AddressPair{IPv4: "10.200.0.5", IPv6: "fd00::5"},
		K8sNamespace: "prod", K8sPodName: "web-0", Labels: []string{"team=a", "k8s:tier=front"},
	}
}

func TestCreatorValid(t *testing.T) {
	ep, err := NewEndpointFromChangeModel(validRequest())
	if err != nil {
		t.Fatal(err)
	}
	if ep.ID != 0 || ep.State != tables.StateWaitingForIdentity || ep.LabelsResolved {
		t.Fatalf("new endpoint: %+v", ep)
	}
	if ep.IPv4.String() != "10.200.0.5" || ep.IPv6.String() != "fd00::5" || ep.PodName() != "prod/web-0" {
		t.Fatalf("fields: %+v", ep)
	}
	if got := ep.RequestLabels.String(); got != "container:team=a;k8s:tier=front" {
		t.Fatalf("labels %q", got)
	}

	noPod := validRequest()
	noPod.K8sPodName, noPod.K8sNamespace = "", ""
	ep, err = NewEndpointFromChangeModel(noPod)
	if err != nil || !ep.LabelsResolved {
		t.Fatalf("endpoint without pod must not wait for pod labels: %v %+v", err, ep)
	}
}

func TestCreatorRejects(t *testing.T) {
	cases := map[string]func(r *models.EndpointChangeRequest){
		"container-id is required":               func(r *models.EndpointChangeRequest) { r.ContainerID = "" },
		"at least one of ipv4 and ipv6":          func(r *models.EndpointChangeRequest) { r.Addressing = nil },
		`addressing.ipv4 "10.0.0.300"`:           func(r *models.EndpointChangeRequest) { r.Addressing.IPv4 = "10.0.0.300" },
		`is not an IPv4 address`:                 func(r *models.EndpointChangeRequest) { r.Addressing.IPv4 = "fd00::1" },
		`is not an IPv6 address`:                 func(r *models.EndpointChangeRequest) { r.Addressing.IPv6 = "10.0.0.1" },
		"cannot be an endpoint address":          func(r *models.EndpointChangeRequest) { r.Addressing.IPv4 = "0.0.0.0" },
		`mac "zz"`:                               func(r *models.EndpointChangeRequest) { r.Mac = "zz" },
		`interface-name "this-name-is-too-long"`: func(r *models.EndpointChangeRequest) { r.InterfaceName = "this-name-is-too-long" },
		`k8s-pod-name "Web_0"`:                   func(r *models.EndpointChangeRequest) { r.K8sPodName = "Web_0" },
		"k8s-namespace given without":            func(r *models.EndpointChangeRequest) { r.K8sPodName = "" },
		`labels: label "container:a b"`:          func(r *models.EndpointChangeRequest) { r.Labels = []string{"a b"} },
		"reserved labels":                        func(r *models.EndpointChangeRequest) { r.Labels = []string{"reserved:host"} },
		"out of range":                           func(r *models.EndpointChangeRequest) { r.ID = 5000 },
		`state "ready": a new endpoint`:          func(r *models.EndpointChangeRequest) { r.State = models.StateReady },
		`state "bogus" is not`:                   func(r *models.EndpointChangeRequest) { r.State = "bogus" },
	}
	for want, mutate := range cases {
		r := validRequest()
		mutate(r)
		_, err := NewEndpointFromChangeModel(r)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want error containing %q, got %v", want, err)
		}
	}
}
