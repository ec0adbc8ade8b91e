package api

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// IP protocol numbers, the same values as the ProtoX constants of the
// shared schema (package statedb), which imports this package.
const (
	protoAny    uint8 = 0
	protoICMP   uint8 = 1
	protoTCP    uint8 = 6
	protoUDP    uint8 = 17
	protoICMPv6 uint8 = 58
	protoSCTP   uint8 = 132
)

// Protocols a toPorts entry may name (case-insensitive), in their
// canonical spelling (Cilium's). ICMP and ICMPV6 entries carry an ICMP
// type as their port; icmps is the clearer way to write those.
var protocols = map[string]uint8{
	"ANY":    protoAny,
	"TCP":    protoTCP,
	"UDP":    protoUDP,
	"SCTP":   protoSCTP,
	"ICMP":   protoICMP,
	"ICMPV6": protoICMPv6,
}

// unsupportedProtocols are protocols Cilium's format knows and Membrane
// does not enforce.
var unsupportedProtocols = map[string]bool{"VRRP": true, "IGMP": true}

// maxPorts bounds the ports of one toPorts entry (Cilium's limit).
const maxPorts = 40

// ServicePorts maps the service names a port may be written as to their
// port number. Cilium resolves a named port against the container ports
// of the selected (destination) pods; Membrane has no pod specs, so it
// resolves names through this fixed table of IANA-registered service
// names (plus "dns" and "dns-tcp", the names Kubernetes DNS deployments
// give port 53). A name outside the table is refused rather than guessed.
var ServicePorts = map[string]uint16{
	"echo": 7, "discard": 9, "daytime": 13, "ftp-data": 20, "ftp": 21,
	"ssh": 22, "telnet": 23, "smtp": 25, "time": 37,
	"domain": 53, "dns": 53, "dns-tcp": 53,
	"bootps": 67, "bootpc": 68, "tftp": 69, "gopher": 70, "finger": 79,
	"http": 80, "www": 80, "www-http": 80, "kerberos": 88, "pop3": 110,
	"sunrpc": 111, "auth": 113, "nntp": 119, "ntp": 123, "epmap": 135,
	"netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139, "imap": 143,
	"snmp": 161, "snmptrap": 162, "bgp": 179, "ldap": 389, "https": 443,
	"microsoft-ds": 445, "isakmp": 500, "syslog": 514, "rtsp": 554,
	"submission": 587, "ipp": 631, "ldaps": 636, "rsync": 873, "ftps": 990,
	"imaps": 993, "pop3s": 995, "socks": 1080, "openvpn": 1194,
	"ms-sql-s": 1433, "mqtt": 1883, "radius": 1812, "radius-acct": 1813,
	"nfs": 2049, "etcd-client": 2379, "etcd-server": 2380, "mysql": 3306,
	"ms-wbt-server": 3389, "svn": 3690, "ipsec-nat-t": 4500, "vxlan": 4789,
	"sip": 5060, "sips": 5061, "xmpp-client": 5222, "postgresql": 5432,
	"amqp": 5672, "geneve": 6081, "redis": 6379, "http-alt": 8080,
	"secure-mqtt": 8883, "memcache": 11211, "mongodb": 27017,
}

// svcNameRe is the syntax of an IANA service name (RFC 6335): letters,
// digits and single hyphens, at least one letter, at most 15 characters.
var svcNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9])*$`)

func isServiceName(s string) bool {
	return len(s) <= 15 && svcNameRe.MatchString(s) && strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz")
}

// protocol returns the canonical name and number of a protocol field
// ("" means ANY).
func protocol(s string) (string, uint8, error) {
	if s == "" {
		return "ANY", protoAny, nil
	}
	up := strings.ToUpper(s)
	if n, ok := protocols[up]; ok {
		return up, n, nil
	}
	if unsupportedProtocols[up] {
		return "", 0, unsupported(fmt.Sprintf("protocol %s is not supported; Membrane enforces TCP, UDP, SCTP, ICMP, ICMPV6 or ANY", up))
	}
	return "", 0, fmt.Errorf("unknown protocol %q (want TCP, UDP, SCTP, ICMP, ICMPV6 or ANY)", s)
}

// Range returns what the port entry matches: the IP protocol number
// (0 for ANY, otherwise as statedb's ProtoTCP, ProtoUDP, ...) and the
// inclusive port range [from, to]. A single port p gives [p, p]; port "0"
// means every port of the protocol and gives [0, 0]. Service names are
// resolved through ServicePorts. For protocols ICMP and ICMPV6 the "port"
// is an ICMP type (0-255), as in Cilium.
func (p PortProtocol) Range() (proto uint8, from, to uint16, err error) {
	proto, from, to, _, err = p.resolve()
	return proto, from, to, err
}

// resolve is Range, also naming the field ("port", "endPort", "protocol")
// an error is about.
func (p PortProtocol) resolve() (proto uint8, from, to uint16, field string, err error) {
	protoName, proto, err := protocol(p.Protocol)
	if err != nil {
		return 0, 0, 0, "protocol", err
	}
	port := strings.TrimSpace(p.Port)
	icmp := proto == protoICMP || proto == protoICMPv6
	switch {
	case port == "":
		return 0, 0, 0, "port", fmt.Errorf("port is required (\"0\" means every port)")
	case isDigits(port):
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return 0, 0, 0, "port", fmt.Errorf("port %s is out of range (0-65535)", port)
		}
		if icmp && n > 255 {
			return 0, 0, 0, "port", fmt.Errorf("port %d of protocol %s is an ICMP type and must be 0-255", n, protoName)
		}
		from = uint16(n)
	default:
		name := strings.ToLower(port)
		if !isServiceName(name) {
			return 0, 0, 0, "port", fmt.Errorf("port %q is neither a number (0-65535) nor a service name (letters, digits and '-', at most 15)", port)
		}
		if icmp {
			return 0, 0, 0, "port", fmt.Errorf("port %q: protocol %s takes a numeric ICMP type (or use icmps, which knows type names)", port, protoName)
		}
		n, ok := ServicePorts[name]
		if !ok {
			return 0, 0, 0, "port", fmt.Errorf("port name %q is not in Membrane's service table (IANA names such as http, https, dns; Kubernetes container port names are not known here): write the port number", port)
		}
		from = n
	}
	to = from
	if p.EndPort != 0 {
		switch {
		case p.EndPort < 0 || p.EndPort > 65535:
			return 0, 0, 0, "endPort", fmt.Errorf("endPort %d is out of range (1-65535)", p.EndPort)
		case !isDigits(port):
			return 0, 0, 0, "endPort", fmt.Errorf("endPort needs a numeric port, not the name %q", port)
		case from == 0:
			return 0, 0, 0, "endPort", fmt.Errorf("endPort %d with port 0: port 0 already means every port", p.EndPort)
		case int(p.EndPort) < int(from):
			return 0, 0, 0, "endPort", fmt.Errorf("endPort %d is below port %d", p.EndPort, from)
		case icmp && p.EndPort > 255:
			return 0, 0, 0, "endPort", fmt.Errorf("endPort %d of protocol %s is an ICMP type and must be 0-255", p.EndPort, protoName)
		}
		to = uint16(p.EndPort)
	}
	return proto, from, to, "", nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
