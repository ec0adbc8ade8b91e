package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/labels"
)

// Kubernetes NetworkPolicy (networking.k8s.io/v1), translated into one
// rule of the policy language with the upstream semantics:
//
//   - spec.podSelector is the rule's endpointSelector, in the policy's
//     namespace (ParsedRule.Namespace scopes it, as for a CNP);
//   - spec.policyTypes says which directions the policy isolates; unset,
//     Ingress always and Egress when spec.egress has rules. The rules of
//     a direction policyTypes leaves out are ignored, as upstream. A direction
//     without rules (`ingress: []`) is an entry that allows nothing: the
//     selected pods are isolated and nothing is let in (or out);
//   - a peer's podSelector selects pods of the policy's namespace, its
//     namespaceSelector pods of the namespaces with those labels ({}: every
//     namespace), both together pods matching both; peers select pods only
//     (k8s:io.kubernetes.pod.namespace exists), never the host or world;
//   - the namespace label Kubernetes sets on every namespace,
//     kubernetes.io/metadata.name (immutable, the namespace's name), is
//     matched against the pod's namespace directly, so it holds where
//     namespace labels are not known;
//   - ipBlock is a CIDR with except, which (as in Cilium) matches
//     addresses that are not pods: a pod is always matched by its identity;
//   - an entry without from/to allows every peer, one without ports every
//     port; ports are TCP (the default), UDP or SCTP with port and endPort.
//
// What cannot be enforced is refused with the field named: named ports
// (Membrane does not know the pods' container port names).
//
// The mirror types below are decoded strictly (an unknown field is an
// error naming it), like every rule: k8s.io/api is not linked here because
// the CLI and the CNI plugin link this package and must stay free of
// k8s.io, and because its decoder ignores unknown fields.

// APIVersionNP is the only apiVersion of NetworkPolicy objects.
const APIVersionNP = "networking.k8s.io/v1"

// Label keys a NetworkPolicy translation selects on.
const (
	// namespaceNameLabel is the label Kubernetes sets on every namespace,
	// equal to its name.
	namespaceNameLabel = "kubernetes.io/metadata.name"
	// podNamespaceKey is the label of a pod's namespace on its endpoint.
	podNamespaceKey = LabelSourceK8s + ":" + labels.NamespaceKey
	// namespaceLabelKeyPrefix begins the endpoint labels carrying the
	// labels of the pod's namespace.
	namespaceLabelKeyPrefix = LabelSourceK8s + ":io.cilium.k8s.namespace.labels."
)

type npSpec struct {
	PodSelector *EndpointSelector `json:"podSelector"`
	Ingress     []npIngressRule   `json:"ingress"`
	Egress      []npEgressRule    `json:"egress"`
	PolicyTypes []string          `json:"policyTypes"`
}

type npIngressRule struct {
	Ports []npPort `json:"ports"`
	From  []npPeer `json:"from"`
}

type npEgressRule struct {
	Ports []npPort `json:"ports"`
	To    []npPeer `json:"to"`
}

type npPeer struct {
	PodSelector       *EndpointSelector `json:"podSelector"`
	NamespaceSelector *EndpointSelector `json:"namespaceSelector"`
	IPBlock           *npIPBlock        `json:"ipBlock"`
}

type npIPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except"`
}

type npPort struct {
	Protocol *string        `json:"protocol"`
	Port     npPortOrString `json:"port"`
	EndPort  *int32         `json:"endPort"`
}

// npPortOrString is an IntOrString port: conform passes it through as
// is (a json.RawMessage), and translate reads it.
type npPortOrString = json.RawMessage

var npSpecType = reflect.TypeFor[npSpec]()

// networkPolicy decodes, translates and records one NetworkPolicy.
func (p *parser) networkPolicy(m map[string]any, loc string) {
	p.checkKeys(m, loc, "", "apiVersion", "kind", "metadata", "spec", "status")
	if av, ok := m["apiVersion"]; ok && av != APIVersionNP {
		p.ps.addf(loc, "apiVersion", "%s is not supported for %s (want %s)", describe(av), KindNP, APIVersionNP)
	}
	obj, uid, at, ok := p.objectMeta(m, KindNP, loc)
	if !ok {
		return
	}
	before := len(p.ps.list) + p.ps.omitted
	spec := m["spec"]
	if spec == nil {
		spec = map[string]any{} // as the API server defaults it
	}
	c := conformer{ps: p.ps, at: at}
	v := c.conform(spec, npSpecType, "spec")
	if c.mistyped {
		return
	}
	var s npSpec
	if err := decodeInto(v, &s); err != nil {
		p.ps.add(at, "spec", err)
		return
	}
	t := npTranslator{v: validator{ps: p.ps, at: at}, ns: obj.Namespace}
	r := t.rule(&s)
	if len(p.ps.list)+p.ps.omitted > before {
		return
	}
	// The translation is valid by construction; a problem found here is a
	// bug in it, reported rather than enforced.
	t.v.rule(&r, "(translated rule)")
	if len(p.ps.list)+p.ps.omitted > before {
		return
	}
	r.Description = fmt.Sprintf("%s %s/%s", KindNP, obj.Namespace, obj.Name)
	r.normalize()
	r.Labels = uniqueLabels(obj.derivedLabels(uid))
	pr := ParsedRule{Rule: r, Namespace: obj.Namespace, Object: &obj}
	for _, l := range r.Labels {
		pr.Labels = append(pr.Labels, l.String())
	}
	p.rules = append(p.rules, pr)
}

// npTranslator turns one NetworkPolicy spec into a rule, reporting
// problems with the spec's field paths.
type npTranslator struct {
	v  validator
	ns string // the policy's namespace
}

func (t npTranslator) rule(s *npSpec) Rule {
	var r Rule
	sub := EndpointSelector{}
	if s.PodSelector != nil {
		sub = t.selector(s.PodSelector, "spec.podSelector", LabelSourceK8s+":")
	}
	r.EndpointSelector = &sub

	ingress, egress := true, len(s.Egress) > 0
	if len(s.PolicyTypes) > 0 {
		ingress, egress = false, false
		for i, pt := range s.PolicyTypes {
			switch pt {
			case "Ingress":
				ingress = true
			case "Egress":
				egress = true
			default:
				t.v.addf(indexPath("spec.policyTypes", i), "%q is not a policy type (want Ingress or Egress)", pt)
			}
		}
		// Rules of a direction policyTypes leaves out have no effect
		// upstream (the documented meaning of policyTypes): they are
		// ignored, not translated nor checked beyond strict decoding.
	}

	if ingress {
		// An entry without peers or ports allows nothing: isolation only.
		r.Ingress = []IngressRule{}
		for i, in := range s.Ingress {
			path := indexPath("spec.ingress", i)
			eps, ents, cidrs := t.peers(in.From, joinPath(path, "from"))
			r.Ingress = append(r.Ingress, IngressRule{FromEndpoints: eps, FromEntities: ents, FromCIDRSet: cidrs, ToPorts: t.ports(in.Ports, path)})
		}
		if len(r.Ingress) == 0 {
			r.Ingress = []IngressRule{{}}
		}
	}
	if egress {
		r.Egress = []EgressRule{}
		for i, eg := range s.Egress {
			path := indexPath("spec.egress", i)
			eps, ents, cidrs := t.peers(eg.To, joinPath(path, "to"))
			r.Egress = append(r.Egress, EgressRule{ToEndpoints: eps, ToEntities: ents, ToCIDRSet: cidrs, ToPorts: t.ports(eg.Ports, path)})
		}
		if len(r.Egress) == 0 {
			r.Egress = []EgressRule{{}}
		}
	}
	return r
}

// peers translates a from/to list. No peers: every peer (entity all).
func (t npTranslator) peers(peers []npPeer, path string) (eps []EndpointSelector, ents []Entity, cidrs []CIDRRule) {
	if len(peers) == 0 {
		return nil, []Entity{EntityAll}, nil
	}
	for i, pe := range peers {
		p := indexPath(path, i)
		switch {
		case pe.IPBlock != nil && (pe.PodSelector != nil || pe.NamespaceSelector != nil):
			t.v.addf(joinPath(p, "ipBlock"), "cannot be combined with podSelector or namespaceSelector in one peer (write them as two peers)")
		case pe.IPBlock != nil:
			c := CIDRRule{Cidr: pe.IPBlock.CIDR, Except: pe.IPBlock.Except}
			t.v.cidrRule(&c, joinPath(p, "ipBlock"))
			cidrs = append(cidrs, c)
		case pe.PodSelector == nil && pe.NamespaceSelector == nil:
			t.v.addf(p, "a peer needs podSelector, namespaceSelector or ipBlock")
		default:
			eps = append(eps, t.peerSelector(pe, p))
		}
	}
	return eps, nil, cidrs
}

// peerSelector selects the pods a podSelector/namespaceSelector peer
// names: the pod's labels under source k8s, its namespace's labels under
// io.cilium.k8s.namespace.labels.
func (t npTranslator) peerSelector(pe npPeer, path string) EndpointSelector {
	var es EndpointSelector
	if pe.PodSelector != nil {
		es = t.selector(pe.PodSelector, joinPath(path, "podSelector"), LabelSourceK8s+":")
	}
	if es.MatchLabels == nil {
		es.MatchLabels = map[string]string{}
	}
	if pe.NamespaceSelector == nil {
		es.MatchLabels[podNamespaceKey] = t.ns
		return es
	}
	ns := t.selector(pe.NamespaceSelector, joinPath(path, "namespaceSelector"), namespaceLabelKeyPrefix)
	maps.Copy(es.MatchLabels, ns.MatchLabels)
	es.MatchExpressions = append(es.MatchExpressions, ns.MatchExpressions...)
	if _, ok := es.MatchLabels[podNamespaceKey]; !ok {
		// Pods only: {} is every namespace, and NotIn must not reach
		// the host or the world.
		es.MatchExpressions = append(es.MatchExpressions, LabelSelectorRequirement{Key: podNamespaceKey, Operator: OpExists})
	}
	return es
}

// selector checks a Kubernetes label selector and returns it with every
// key under prefix; the namespace-name label of a namespaceSelector
// becomes the pod's namespace.
func (t npTranslator) selector(s *EndpointSelector, path, prefix string) EndpointSelector {
	out := EndpointSelector{}
	rename := func(k string) string {
		if prefix == namespaceLabelKeyPrefix && k == namespaceNameLabel {
			return podNamespaceKey
		}
		return prefix + k
	}
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		if strings.Contains(k, ":") {
			t.v.addf(fmt.Sprintf("%s.matchLabels[%q]", path, k), "a Kubernetes label key has no ':' (a NetworkPolicy selects pod labels; sources are for Cilium rules)")
			continue
		}
		if out.MatchLabels == nil {
			out.MatchLabels = map[string]string{}
		}
		out.MatchLabels[rename(k)] = s.MatchLabels[k]
	}
	for i, e := range s.MatchExpressions {
		if strings.Contains(e.Key, ":") {
			t.v.addf(joinPath(indexPath(joinPath(path, "matchExpressions"), i), "key"), "a Kubernetes label key has no ':' (a NetworkPolicy selects pod labels; sources are for Cilium rules)")
			continue
		}
		e.Values = slices.Clone(e.Values)
		e.Key = rename(e.Key)
		out.MatchExpressions = append(out.MatchExpressions, e)
	}
	// Checked as written, so that messages name the user's keys.
	t.v.selector(s, path)
	return out
}

// ports translates an entry's ports: one toPorts entry, or none (every
// port of every protocol).
func (t npTranslator) ports(ports []npPort, path string) []PortRule {
	if len(ports) == 0 {
		return nil
	}
	var out []PortProtocol
	for i, np := range ports {
		p := indexPath(joinPath(path, "ports"), i)
		pp, ok := t.port(np, p)
		if ok {
			out = append(out, pp)
		}
	}
	var rules []PortRule
	for chunk := range slices.Chunk(out, maxPorts) {
		rules = append(rules, PortRule{Ports: chunk})
	}
	return rules
}

func (t npTranslator) port(np npPort, path string) (PortProtocol, bool) {
	pp := PortProtocol{Protocol: "TCP", Port: "0"}
	if np.Protocol != nil {
		switch *np.Protocol {
		case "TCP", "UDP", "SCTP":
			pp.Protocol = *np.Protocol
		default:
			t.v.addf(joinPath(path, "protocol"), "%q is not a NetworkPolicy protocol (want TCP, UDP or SCTP)", *np.Protocol)
			return pp, false
		}
	}
	raw := strings.TrimSpace(string(np.Port))
	switch {
	case raw == "" || raw == "null":
		if np.EndPort != nil {
			t.v.addf(joinPath(path, "endPort"), "needs port (the first port of the range)")
			return pp, false
		}
		return pp, true
	case raw[0] == '"':
		var name string
		_ = json.Unmarshal(np.Port, &name)
		t.v.add(joinPath(path, "port"), unsupported(fmt.Sprintf("named port %q is not supported: Membrane does not know the pods' container port names; write the port number", name)))
		return pp, false
	}
	n, err := strconv.ParseInt(raw, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		t.v.addf(joinPath(path, "port"), "must be a port number (1-65535), not %s", raw)
		return pp, false
	}
	pp.Port = strconv.FormatInt(n, 10)
	if np.EndPort != nil {
		pp.EndPort = *np.EndPort
		if pp.EndPort < 1 {
			t.v.addf(joinPath(path, "endPort"), "must be a port number (1-65535), not %d", pp.EndPort)
			return pp, false
		}
		if pp.EndPort == int32(n) {
			pp.EndPort = 0 // a range of one port
		}
	}
	if _, _, _, field, err := pp.resolve(); err != nil {
		t.v.add(joinPath(path, field), err)
		return pp, false
	}
	return pp, true
}
