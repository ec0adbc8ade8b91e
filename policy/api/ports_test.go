package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/policy/api"
)

// Range gives the engine protocol numbers of the shared schema and
// inclusive port ranges.
func TestPortProtocolRange(t *testing.T) {
	cases := []struct {
		pp       api.PortProtocol
		proto    uint8
		from, to uint16
		err      string
	}{
		{api.PortProtocol{Port: "80", Protocol: "TCP"}, maps.ProtoTCP, 80, 80, ""},
		{api.PortProtocol{Port: "53", Protocol: "udp"}, maps.ProtoUDP, 53, 53, ""},
		{api.PortProtocol{Port: "9000", EndPort: 9100, Protocol: "Sctp"}, maps.ProtoSCTP, 9000, 9100, ""},
		{api.PortProtocol{Port: "443"}, maps.ProtoAny, 443, 443, ""},
		{api.PortProtocol{Port: "8080", EndPort: 8080, Protocol: "ANY"}, maps.ProtoAny, 8080, 8080, ""},
		{api.PortProtocol{Port: "0", Protocol: "TCP"}, maps.ProtoTCP, 0, 0, ""},
		{api.PortProtocol{Port: "https", Protocol: "TCP"}, maps.ProtoTCP, 443, 443, ""},
		{api.PortProtocol{Port: "DNS", Protocol: "UDP"}, maps.ProtoUDP, 53, 53, ""},
		{api.PortProtocol{Port: "65535"}, maps.ProtoAny, 65535, 65535, ""},
		{api.PortProtocol{Port: "8", Protocol: "ICMP"}, maps.ProtoICMP, 8, 8, ""},
		{api.PortProtocol{Port: "128", Protocol: "icmpv6"}, maps.ProtoICMPv6, 128, 128, ""},

		{api.PortProtocol{Port: ""}, 0, 0, 0, "port is required"},
		{api.PortProtocol{Port: "65536"}, 0, 0, 0, "out of range"},
		{api.PortProtocol{Port: "-1"}, 0, 0, 0, "neither a number"},
		{api.PortProtocol{Port: "nosuchservice"}, 0, 0, 0, "not in Membrane's service table"},
		{api.PortProtocol{Port: "80", EndPort: 79}, 0, 0, 0, "below port"},
		{api.PortProtocol{Port: "80", EndPort: -5}, 0, 0, 0, "out of range"},
		{api.PortProtocol{Port: "0", EndPort: 10}, 0, 0, 0, "port 0 already means every port"},
		{api.PortProtocol{Port: "http", EndPort: 81}, 0, 0, 0, "needs a numeric port"},
		{api.PortProtocol{Port: "80", Protocol: "GRE"}, 0, 0, 0, "unknown protocol"},
		{api.PortProtocol{Port: "80", Protocol: "IGMP"}, 0, 0, 0, "not supported"},
		{api.PortProtocol{Port: "echo", Protocol: "ICMP"}, 0, 0, 0, "numeric ICMP type"},
	}
	for _, c := range cases {
		proto, from, to, err := c.pp.Range()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: err %v, want %q", c.pp, err, c.err)
			}
			continue
		}
		if err != nil || proto != c.proto || from != c.from || to != c.to {
			t.Errorf("%+v: got (%d, %d, %d, %v), want (%d, %d, %d)", c.pp, proto, from, to, err, c.proto, c.from, c.to)
		}
	}
}

func TestICMPFieldTypeNumber(t *testing.T) {
	cases := []struct {
		family, typ string
		proto       uint8
		n           uint8
		err         string
	}{
		{"", `8`, maps.ProtoICMP, 8, ""},
		{"IPv4", `"EchoRequest"`, maps.ProtoICMP, 8, ""},
		{"IPv4", `"echoreply"`, maps.ProtoICMP, 0, ""},
		{"", `"DestinationUnreachable"`, maps.ProtoICMP, 3, ""},
		{"IPv6", `"DestinationUnreachable"`, maps.ProtoICMPv6, 1, ""},
		{"IPv6", `"EchoRequest"`, maps.ProtoICMPv6, 128, ""},
		{"ipv6", `"NeighborAdvertisement"`, maps.ProtoICMPv6, 136, ""},
		{"IPv6", `"129"`, maps.ProtoICMPv6, 129, ""},
		{"IPv4", `255`, maps.ProtoICMP, 255, ""},

		{"IPv4", `256`, 0, 0, "out of range"},
		{"IPv4", `-1`, 0, 0, "unknown IPv4 ICMP type"},
		{"IPv4", `"PacketTooBig"`, 0, 0, "unknown IPv4 ICMP type"},
		{"IPv4", ``, 0, 0, "type is required"},
		{"IPv4", `true`, 0, 0, "must be a number"},
		{"IPv7", `8`, 0, 0, "unknown family"},
	}
	for _, c := range cases {
		f := api.ICMPField{Family: c.family, Type: json.RawMessage(c.typ)}
		n, err := f.TypeNumber()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s/%s: err %v, want %q", c.family, c.typ, err, c.err)
			}
			continue
		}
		proto, perr := f.Proto()
		if err != nil || perr != nil || n != c.n || proto != c.proto {
			t.Errorf("%s/%s: got type %d proto %d (%v, %v), want %d proto %d", c.family, c.typ, n, proto, err, perr, c.n, c.proto)
		}
	}
}

// The service table holds valid names and ports.
func TestServicePorts(t *testing.T) {
	for name, port := range api.ServicePorts {
		pp := api.PortProtocol{Port: name}
		if _, from, _, err := pp.Range(); err != nil || from != port || port == 0 {
			t.Errorf("%s: Range() = %d, %v; table says %d", name, from, err, port)
		}
	}
	if api.ServicePorts["http"] != 80 || api.ServicePorts["https"] != 443 || api.ServicePorts["dns"] != 53 {
		t.Error("http, https and dns must resolve to 80, 443 and 53")
	}
}

func TestParseRuleLabel(t *testing.T) {
	cases := []struct {
		in, want string
		source   string
		err      bool
	}{
		{"k8s:io.cilium.k8s.policy.name=web", "k8s:io.cilium.k8s.policy.name=web", "k8s", false},
		{"team=a", "unspec:team=a", "", false},
		{"flag", "unspec:flag", "", false},
		{"any:x=a:b", "any:x=a:b", "any", false},
		{"x=a=b", "unspec:x=a=b", "", false},
		{"", "", "", true},
		{":x", "", "", true},
		{"k8s:=v", "", "", true},
		{"BAD SOURCE:x", "", "", true},
		{"k=\x01", "", "", true},
	}
	for _, c := range cases {
		l, err := api.ParseRuleLabel(c.in)
		if c.err {
			if err == nil {
				t.Errorf("%q: accepted as %v", c.in, l)
			}
			continue
		}
		if err != nil || l.String() != c.want || l.Source != c.source {
			t.Errorf("%q: got %q (source %q, %v), want %q (source %q)", c.in, l.String(), l.Source, err, c.want, c.source)
		}
	}
}
