package policy

import (
	"fmt"

	datapath "github.com/membrane-net/membrane/datapath/maps"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// portProto is what an entry matches at L4: a protocol (0: any) and an
// inclusive port range [lo, hi] ([0, 65535]: every port; an ICMP type
// for ICMP and ICMPv6).
type portProto struct {
	proto  uint8
	lo, hi uint16
}

// allPorts matches every packet of every protocol.
var allPorts = portProto{proto: datapath.ProtoAny, lo: 0, hi: 65535}

func (p portProto) allPortsOf() bool { return p.lo == 0 && p.hi == 65535 }

// covers reports whether p matches every packet o matches: p's protocol
// is o's or any, and p's range contains o's.
func (p portProto) covers(o portProto) bool {
	return (p.proto == datapath.ProtoAny || p.proto == o.proto) && p.lo <= o.lo && o.hi <= p.hi
}

// policyPorts turns the range into PolicyKey's encoding: (0, 0) for
// every port, (p, p) for one port, (lo, hi) for a range. ok is false for
// the one range the encoding cannot express: port 0 alone.
func (p portProto) policyPorts() (port, endPort uint16, ok bool) {
	switch {
	case p.allPortsOf():
		return 0, 0, true
	case p.lo == 0 && p.hi == 0:
		return 0, 0, false
	}
	return p.lo, p.hi, true
}

// portProtoOf reads a PolicyKey's protocol and ports back.
func portProtoOf(k tables.PolicyKey) portProto {
	if k.Port == 0 && k.EndPort == 0 {
		return portProto{proto: k.Protocol, lo: 0, hi: 65535}
	}
	hi := k.EndPort
	if hi < k.Port {
		hi = k.Port
	}
	return portProto{proto: k.Protocol, lo: k.Port, hi: hi}
}

// portProtosOf returns what a section's toPorts and icmps match; neither
// means every port of every protocol.
//
// Protocol ANY with specific ports becomes one entry per port protocol
// (TCP, UDP, SCTP), as in Cilium: the datapath's policy key orders
// protocol before port, so "any protocol, port 80" cannot be one key, and
// Protocol 0 always means every port of every protocol (ICMP included).
// Port 0 means every port; for ICMP it is ICMP type 0 in Cilium's format,
// which the policy key cannot tell apart from "every type": it is read
// as every type, as Cilium does.
func portProtosOf(toPorts []policyapi.PortRule, icmps []policyapi.ICMPRule) ([]portProto, []error) {
	if len(toPorts) == 0 && len(icmps) == 0 {
		return []portProto{allPorts}, nil
	}
	var (
		out  []portProto
		errs []error
	)
	for i, pr := range toPorts {
		if len(pr.Ports) == 0 {
			out = append(out, allPorts)
			continue
		}
		for j, pp := range pr.Ports {
			proto, from, to, err := pp.Range()
			if err != nil {
				errs = append(errs, fmt.Errorf("toPorts[%d].ports[%d]: %w", i, j, err))
				continue
			}
			if from == 0 {
				// Port 0: every port (or ICMP type) of the protocol.
				out = append(out, portProto{proto: proto, lo: 0, hi: 65535})
				continue
			}
			if to < from {
				to = from
			}
			if proto == datapath.ProtoAny {
				for _, p := range []uint8{datapath.ProtoTCP, datapath.ProtoUDP, datapath.ProtoSCTP} {
					out = append(out, portProto{proto: p, lo: from, hi: to})
				}
				continue
			}
			out = append(out, portProto{proto: proto, lo: from, hi: to})
		}
	}
	for i, ir := range icmps {
		for j, f := range ir.Fields {
			proto, err := f.Proto()
			if err == nil {
				var typ uint8
				if typ, err = f.TypeNumber(); err == nil {
					if typ == 0 {
						out = append(out, portProto{proto: proto, lo: 0, hi: 65535})
					} else {
						out = append(out, portProto{proto: proto, lo: uint16(typ), hi: uint16(typ)})
					}
					continue
				}
			}
			errs = append(errs, fmt.Errorf("icmps[%d].fields[%d]: %w", i, j, err))
		}
	}
	return out, errs
}
