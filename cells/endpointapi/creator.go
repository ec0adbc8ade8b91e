package endpointapi

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ifNameRe is a Linux interface name: at most 15 bytes, no '/', no
// whitespace.
var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9_.\-@]{1,15}$`)

// NewEndpointFromChangeModel is the endpoint creator: it turns a request
// into an endpoint row, validating every field, without looking at any
// other endpoint. The row carries the request's ID (0 unless the request
// named one), starts in waiting-for-identity and has its labels resolved
// unless it names a pod whose metadata must be waited for.
func NewEndpointFromChangeModel(req *models.EndpointChangeRequest) (*tables.Endpoint, error) {
	if req.ID < 0 || req.ID > maxEndpointID {
		return nil, fmt.Errorf("id %d out of range 0..%d", req.ID, maxEndpointID)
	}
	if req.ContainerID == "" {
		return nil, fmt.Errorf("container-id is required")
	}
	ep := &tables.Endpoint{
		ID:              uint16(req.ID),
		ContainerID:     req.ContainerID,
		ContainerIfName: req.ContainerInterfaceName,
		HostIfName:      req.InterfaceName,
		HostIfIndex:     int(req.InterfaceIndex),
		NetnsCookie:     req.NetnsCookie,
		Netns:           req.NetworkNamespace,
		K8sNamespace:    req.K8sNamespace,
		K8sPodName:      req.K8sPodName,
		K8sUID:          req.K8sUID,
		State:           tables.StateWaitingForIdentity,
		Created:         time.Now(),
	}
	if ep.ContainerIfName == "" {
		ep.ContainerIfName = "eth0"
	}
	if !ifNameRe.MatchString(ep.ContainerIfName) {
		return nil, fmt.Errorf("container-interface-name %q is not a valid interface name", ep.ContainerIfName)
	}
	if ep.HostIfName != "" && !ifNameRe.MatchString(ep.HostIfName) {
		return nil, fmt.Errorf("interface-name %q is not a valid interface name", ep.HostIfName)
	}
	if req.InterfaceIndex < 0 || req.InterfaceIndex > 1<<31-1 {
		return nil, fmt.Errorf("interface-index %d out of range", req.InterfaceIndex)
	}
	for _, mac := range []struct{ field, v string }{{"mac", req.Mac}, {"host-mac", req.HostMac}} {
		if mac.v == "" {
			continue
		}
		hw, err := net.ParseMAC(mac.v)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("%s %q is not an Ethernet MAC address", mac.field, mac.v)
		}
	}
	ep.MAC, ep.HostMAC = req.Mac, req.HostMac

	if req.Addressing == nil || (req.Addressing.IPv4 == "" && req.Addressing.IPv6 == "") {
		return nil, fmt.Errorf("addressing: at least one of ipv4 and ipv6 is required")
	}
	var err error
	if ep.IPv4, err = parseAddr("addressing.ipv4", req.Addressing.IPv4, true); err != nil {
		return nil, err
	}
	if ep.IPv6, err = parseAddr("addressing.ipv6", req.Addressing.IPv6, false); err != nil {
		return nil, err
	}

	if ep.K8sPodName != "" {
		if ep.K8sNamespace == "" {
			ep.K8sNamespace = "default"
		}
		if !tables.ValidK8sName(ep.K8sPodName) {
			return nil, fmt.Errorf("k8s-pod-name %q is not a valid pod name", ep.K8sPodName)
		}
		if !tables.ValidK8sName(ep.K8sNamespace) {
			return nil, fmt.Errorf("k8s-namespace %q is not a valid namespace", ep.K8sNamespace)
		}
	} else if ep.K8sNamespace != "" {
		return nil, fmt.Errorf("k8s-namespace given without k8s-pod-name")
	}
	ep.LabelsResolved = ep.K8sPodName == ""

	if ep.RequestLabels, err = labels.ParseList(req.Labels, labels.DefaultSource); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	if err := checkRequestLabels(ep.RequestLabels); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}

	switch req.State {
	case "", models.EndpointState(tables.StateWaitingForIdentity):
	default:
		if !tables.ValidState(tables.EndpointState(req.State)) {
			return nil, fmt.Errorf("state %q is not an endpoint state", req.State)
		}
		return nil, fmt.Errorf("state %q: a new endpoint starts in %s", req.State, tables.StateWaitingForIdentity)
	}
	return ep, nil
}

// checkRequestLabels refuses labels a client may not ask for: reserved
// labels are the agent's to give. Every way request labels reach an
// endpoint checks them here: the creator, and PATCH .../labels.
func checkRequestLabels(ls labels.Labels) error {
	for _, l := range ls {
		if l.Source == labels.SourceReserved {
			return fmt.Errorf("%q: reserved labels are the agent's to give", l)
		}
	}
	return nil
}

func parseAddr(field, s string, v4 bool) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	// Accept "10.0.0.3" and CNI-style "10.0.0.3/32".
	if p, err := netip.ParsePrefix(s); err == nil {
		s = p.Addr().String()
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Errorf("%s %q is not an IP address", field, s)
	case a.Zone() != "":
		return a, fmt.Errorf("%s %q: zones are not allowed", field, s)
	case v4 && !a.Is4():
		return a, fmt.Errorf("%s %q is not an IPv4 address", field, s)
	case !v4 && (!a.Is6() || a.Is4In6()):
		return a, fmt.Errorf("%s %q is not an IPv6 address", field, s)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return a, fmt.Errorf("%s %q cannot be an endpoint address", field, s)
	}
	return a, nil
}
