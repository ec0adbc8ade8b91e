package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/labels"
)

// Entities lists every entity a rule may name in fromEntities/toEntities.
var Entities = []Entity{
	EntityAll, EntityWorld, EntityWorldIPv4, EntityWorldIPv6, EntityCluster,
	EntityHost, EntityRemoteNode, EntityInit, EntityHealth, EntityUnmanaged,
	EntityKubeAPIServer, EntityIngress,
}

// Selector operators (matchExpressions), as in Kubernetes.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// unsupportedHints explain, by JSON field name, why a field of Cilium's
// format is refused and what to write instead.
var unsupportedHints = map[string]string{
	"rules":             "L7 rules (http/dns/kafka) are not supported; Membrane enforces L3/L4 only",
	"toFQDNs":           "toFQDNs is not supported: DNS-based policy needs a DNS proxy, which Membrane does not have; use toCIDR or toCIDRSet",
	"toServices":        "toServices is not supported: Membrane does not watch Kubernetes services; use toEndpoints or toCIDR",
	"fromRequires":      "fromRequires is not supported (deprecated in Cilium); add the required labels to fromEndpoints",
	"toRequires":        "toRequires is not supported (deprecated in Cilium); add the required labels to toEndpoints",
	"fromGroups":        "fromGroups (cloud provider groups) is not supported; use fromCIDR or fromCIDRSet",
	"toGroups":          "toGroups (cloud provider groups) is not supported; use toCIDR or toCIDRSet",
	"fromNodes":         "fromNodes (selecting nodes by their labels) is not supported; use fromEntities host or remote-node",
	"toNodes":           "toNodes (selecting nodes by their labels) is not supported; use toEntities host or remote-node",
	"authentication":    "authentication (mutual authentication) is not supported",
	"auth":              "auth (mutual authentication; authentication's spelling before Cilium 1.15) is not supported",
	"terminatingTLS":    "terminatingTLS is not supported: TLS interception needs an L7 proxy; Membrane enforces L3/L4 only",
	"originatingTLS":    "originatingTLS is not supported: TLS origination needs an L7 proxy; Membrane enforces L3/L4 only",
	"serverNames":       "serverNames (TLS SNI matching) is not supported; Membrane enforces L3/L4 only",
	"listener":          "listener (Envoy listeners) is not supported; Membrane enforces L3/L4 only",
	"log":               "log (policy log values) is not supported",
	"cidrGroupRef":      "cidrGroupRef is not supported: Membrane has no CiliumCIDRGroup resources; list the CIDRs in cidr and except",
	"cidrGroupSelector": "cidrGroupSelector is not supported: Membrane has no CiliumCIDRGroup resources; list the CIDRs in cidr and except",
}

// Validate reports every problem with the rule (up to a limit) as an
// *Error whose problems name the field, e.g.
// "ingress[0].toPorts[0].rules: L7 rules (http/dns/kafka) are not
// supported; Membrane enforces L3/L4 only". Problems about fields that
// Cilium accepts but Membrane does not enforce wrap ErrUnsupported.
// Validate does not modify the rule.
func (r *Rule) Validate() error {
	v := validator{ps: &problems{}}
	v.rule(r, "")
	return v.ps.err()
}

type validator struct {
	ps *problems
	at string
}

func (v validator) add(field string, err error) { v.ps.add(v.at, field, err) }
func (v validator) addf(field, format string, args ...any) {
	v.ps.addf(v.at, field, format, args...)
}

// rule checks r, whose fields live under path ("" for a plain rule,
// "spec" or "specs[1]" inside a CiliumNetworkPolicy).
func (v validator) rule(r *Rule, path string) {
	switch {
	case r.EndpointSelector == nil && r.NodeSelector == nil:
		v.addf(joinPath(path, "endpointSelector"), "required: the endpoints the rule applies to ({} selects every endpoint)")
	case r.EndpointSelector != nil && r.NodeSelector != nil:
		v.addf(joinPath(path, "nodeSelector"), "a rule has either endpointSelector or nodeSelector, not both")
	}
	if r.EndpointSelector != nil {
		v.selector(r.EndpointSelector, joinPath(path, "endpointSelector"))
	}
	if r.NodeSelector != nil && r.EndpointSelector == nil {
		v.add(joinPath(path, "nodeSelector"), unsupported("nodeSelector (host policy) is not supported: Membrane has no host endpoint; select pods with endpointSelector"))
	}

	for i := range r.Ingress {
		s := &r.Ingress[i]
		p := indexPath(joinPath(path, "ingress"), i)
		v.peers(p, "from", s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet)
		v.l4(p, s.ToPorts, s.ICMPs)
	}
	for i := range r.IngressDeny {
		s := &r.IngressDeny[i]
		p := indexPath(joinPath(path, "ingressDeny"), i)
		v.peers(p, "from", s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet)
		v.l4(p, s.ToPorts, s.ICMPs)
	}
	for i := range r.Egress {
		s := &r.Egress[i]
		p := indexPath(joinPath(path, "egress"), i)
		v.peers(p, "to", s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet)
		v.l4(p, s.ToPorts, s.ICMPs)
	}
	for i := range r.EgressDeny {
		s := &r.EgressDeny[i]
		p := indexPath(joinPath(path, "egressDeny"), i)
		v.peers(p, "to", s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet)
		v.l4(p, s.ToPorts, s.ICMPs)
	}

	for i, l := range r.Labels {
		if err := l.validate(); err != nil {
			v.add(indexPath(joinPath(path, "labels"), i), err)
		}
	}
	v.unsupportedFields(reflect.ValueOf(r).Elem(), path)
}

// selector checks a label selector: keys are "[source:]key" with a valid
// source and Kubernetes label key, values are label values, operators are
// Kubernetes'.
func (v validator) selector(s *EndpointSelector, path string) {
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		p := fmt.Sprintf("%s.matchLabels[%q]", path, k)
		src, key, err := selectorKey(k)
		if err != nil {
			v.add(p, err)
			continue
		}
		if err := (labels.Label{Source: src, Key: key, Value: s.MatchLabels[k]}).Validate(); err != nil {
			v.add(p, err)
		}
	}
	for i, e := range s.MatchExpressions {
		p := indexPath(joinPath(path, "matchExpressions"), i)
		src, key, err := selectorKey(e.Key)
		if err != nil {
			v.add(joinPath(p, "key"), err)
		}
		switch e.Operator {
		case OpIn, OpNotIn:
			if len(e.Values) == 0 {
				v.addf(joinPath(p, "values"), "operator %s needs at least one value", e.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(e.Values) > 0 {
				v.addf(joinPath(p, "values"), "operator %s takes no values", e.Operator)
			}
		case "":
			v.addf(joinPath(p, "operator"), "required: In, NotIn, Exists or DoesNotExist")
		default:
			v.addf(joinPath(p, "operator"), "unknown operator %q (want In, NotIn, Exists or DoesNotExist)", e.Operator)
		}
		if err != nil {
			continue
		}
		for j, val := range e.Values {
			if err := (labels.Label{Source: src, Key: key, Value: val}).Validate(); err != nil {
				v.add(indexPath(joinPath(p, "values"), j), err)
			}
		}
	}
}

// selectorKey splits "[source:]key"; a key without a source matches labels
// of any source.
func selectorKey(k string) (source, key string, err error) {
	source, key = labels.SourceAny, k
	if i := strings.IndexByte(k, ':'); i >= 0 {
		source, key = k[:i], k[i+1:]
		if source == "" {
			return "", "", fmt.Errorf("key %q: empty source before ':'", k)
		}
	}
	if key == "" {
		return "", "", fmt.Errorf("empty key")
	}
	if err := (labels.Label{Source: source, Key: key}).Validate(); err != nil {
		return "", "", fmt.Errorf("key %q: %w", k, err)
	}
	return source, key, nil
}

// peers checks a section's peer selectors, entities and CIDRs; dir is
// "from" or "to", the prefix of their field names.
func (v validator) peers(path, dir string, eps []EndpointSelector, ents []Entity, cidrs []string, sets []CIDRRule) {
	for i := range eps {
		v.selector(&eps[i], indexPath(joinPath(path, dir+"Endpoints"), i))
	}
	for i, e := range ents {
		if !slices.Contains(Entities, e) {
			names := make([]string, len(Entities))
			for j, k := range Entities {
				names[j] = string(k)
			}
			v.addf(indexPath(joinPath(path, dir+"Entities"), i), "unknown entity %q (known: %s)", e, strings.Join(names, ", "))
		}
	}
	for i, c := range cidrs {
		if _, err := parseCIDR(c); err != nil {
			v.add(indexPath(joinPath(path, dir+"CIDR"), i), err)
		}
	}
	for i := range sets {
		v.cidrRule(&sets[i], indexPath(joinPath(path, dir+"CIDRSet"), i))
	}
}

// parseCIDR reads a prefix ("10.0.0.0/8") or a single address ("10.1.2.3",
// a /32 or /128).
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8, fd00::/64) or an IP address", s)
}

func (v validator) cidrRule(c *CIDRRule, path string) {
	if c.Cidr == "" {
		if !present(c.CIDRGroupRef) && !present(c.CIDRGroupSelector) {
			v.addf(joinPath(path, "cidr"), "required")
		}
		return
	}
	prefix, err := parseCIDR(c.Cidr)
	if err != nil {
		v.add(joinPath(path, "cidr"), err)
		return
	}
	prefix = prefix.Masked()
	for i, e := range c.Except {
		p := indexPath(joinPath(path, "except"), i)
		ex, err := parseCIDR(e)
		switch {
		case err != nil:
			v.add(p, err)
		case ex.Addr().Is4() != prefix.Addr().Is4():
			v.addf(p, "%s and cidr %s are of different address families", e, c.Cidr)
		case ex.Bits() < prefix.Bits() || !prefix.Contains(ex.Addr()):
			v.addf(p, "%s is not inside cidr %s", e, c.Cidr)
		}
	}
}

// l4 checks a section's toPorts and icmps.
func (v validator) l4(path string, ports []PortRule, icmps []ICMPRule) {
	if len(ports) > 0 && len(icmps) > 0 {
		v.addf(joinPath(path, "icmps"), "icmps and toPorts cannot be combined in one rule section (as in Cilium): write them as two entries")
	}
	for i, pr := range ports {
		p := indexPath(joinPath(path, "toPorts"), i)
		switch {
		case len(pr.Ports) == 0 && !present(pr.Rules):
			v.addf(joinPath(p, "ports"), "at least one port is required (port \"0\" means every port)")
		case len(pr.Ports) > maxPorts:
			v.addf(joinPath(p, "ports"), "%d ports; at most %d per toPorts entry", len(pr.Ports), maxPorts)
		}
		for j, pp := range pr.Ports {
			if _, _, _, field, err := pp.resolve(); err != nil {
				v.add(joinPath(indexPath(joinPath(p, "ports"), j), field), err)
			}
		}
	}
	for i, ir := range icmps {
		p := indexPath(joinPath(path, "icmps"), i)
		switch {
		case len(ir.Fields) == 0:
			v.addf(joinPath(p, "fields"), "at least one ICMP type is required")
		case len(ir.Fields) > maxICMPFields:
			v.addf(joinPath(p, "fields"), "%d fields; at most %d per icmps entry", len(ir.Fields), maxICMPFields)
		}
		for j, f := range ir.Fields {
			fp := indexPath(joinPath(p, "fields"), j)
			if _, err := family(f.Family); err != nil {
				v.add(joinPath(fp, "family"), err)
				continue
			}
			if _, err := f.TypeNumber(); err != nil {
				v.add(joinPath(fp, "type"), err)
			}
		}
	}
}

// unsupportedFields reports every Unsupported field that is set, anywhere
// in the value (a struct, or a slice or pointer leading to structs).
func (v validator) unsupportedFields(val reflect.Value, path string) {
	switch val.Kind() {
	case reflect.Pointer:
		if !val.IsNil() {
			v.unsupportedFields(val.Elem(), path)
		}
	case reflect.Slice:
		if val.Type() == rawMessageType {
			return
		}
		for i := 0; i < val.Len(); i++ {
			v.unsupportedFields(val.Index(i), indexPath(path, i))
		}
	case reflect.Struct:
		t := val.Type()
		fs := structFields(t)
		for _, name := range fs.names {
			f := fs.byName[name]
			fv := val.FieldByIndex(f.Index)
			if f.Type != rawMessageType {
				v.unsupportedFields(fv, joinPath(path, name))
				continue
			}
			if t == icmpFieldType { // ICMPField.Type is a number-or-name, not Unsupported
				continue
			}
			if present(fv.Interface().(json.RawMessage)) {
				hint, ok := unsupportedHints[name]
				if !ok {
					hint = name + " is not supported by Membrane"
				}
				v.add(joinPath(path, name), unsupported(hint))
			}
		}
	}
}

// present reports whether an Unsupported field was given (null is unset).
func present(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s != "" && s != "null"
}

// normalize rewrites a valid rule into canonical form, so that stored
// rules compare and display alike: protocols upper-case (empty becomes
// ANY), port names lower-case, CIDRs as masked prefixes, ICMP families
// and type names in their table spelling, rule labels with a source.
func (r *Rule) normalize() {
	normPorts := func(prs []PortRule) {
		for i := range prs {
			for j := range prs[i].Ports {
				pp := &prs[i].Ports[j]
				if name, _, err := protocol(pp.Protocol); err == nil {
					pp.Protocol = name
				}
				pp.Port = strings.ToLower(strings.TrimSpace(pp.Port))
				if isDigits(pp.Port) {
					if n, err := strconv.ParseUint(pp.Port, 10, 16); err == nil {
						pp.Port = strconv.FormatUint(n, 10)
					}
				}
			}
		}
	}
	normICMPs := func(irs []ICMPRule) {
		for i := range irs {
			for j := range irs[i].Fields {
				f := &irs[i].Fields[j]
				if fam, err := family(f.Family); err == nil {
					f.Family = fam
				}
				if _, canon, err := f.resolve(); err == nil {
					f.Type = canon
				}
			}
		}
	}
	normCIDRs := func(cidrs []string, sets []CIDRRule) {
		for i, c := range cidrs {
			if p, err := parseCIDR(c); err == nil {
				cidrs[i] = p.Masked().String()
			}
		}
		for i := range sets {
			if p, err := parseCIDR(sets[i].Cidr); err == nil {
				sets[i].Cidr = p.Masked().String()
			}
			for j, e := range sets[i].Except {
				if p, err := parseCIDR(e); err == nil {
					sets[i].Except[j] = p.Masked().String()
				}
			}
		}
	}
	for i := range r.Ingress {
		s := &r.Ingress[i]
		normPorts(s.ToPorts)
		normICMPs(s.ICMPs)
		normCIDRs(s.FromCIDR, s.FromCIDRSet)
	}
	for i := range r.IngressDeny {
		s := &r.IngressDeny[i]
		normPorts(s.ToPorts)
		normICMPs(s.ICMPs)
		normCIDRs(s.FromCIDR, s.FromCIDRSet)
	}
	for i := range r.Egress {
		s := &r.Egress[i]
		normPorts(s.ToPorts)
		normICMPs(s.ICMPs)
		normCIDRs(s.ToCIDR, s.ToCIDRSet)
	}
	for i := range r.EgressDeny {
		s := &r.EgressDeny[i]
		normPorts(s.ToPorts)
		normICMPs(s.ICMPs)
		normCIDRs(s.ToCIDR, s.ToCIDRSet)
	}
	for i := range r.Labels {
		if r.Labels[i].Source == "" {
			r.Labels[i].Source = LabelSourceUnspec
		}
	}
}
