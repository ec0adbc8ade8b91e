package policy

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	datapath "github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Verdicts of a trace (models.PolicyTraceResponse) and its stages.
const (
	VerdictAllowed = models.PolicyVerdictAllowed
	VerdictDenied  = models.PolicyVerdictDenied
)

// Identities given to label sets that have none, so selectors can match
// them as cluster identities; outside every real range.
const (
	hypotheticalSrc = tables.MaxClusterIdentity + 1
	hypotheticalDst = tables.MaxClusterIdentity + 2
)

type tracer struct {
	c          *controller
	rules      statedb.Table[*tables.PolicyRule]
	identities statedb.Table[*tables.Identity]
	endpoints  statedb.Table[*tables.Endpoint]
}

// newTraceRoutes serves POST /v1/policy/trace: models.PolicyTraceRequest
// in, models.PolicyTraceResponse out.
func newTraceRoutes(c *controller) apiserver.RoutesOut {
	t := &tracer{c: c, rules: c.rulesTbl, identities: c.identitiesTbl, endpoints: c.endpointsTbl}
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "POST /v1/policy/trace", Handler: apiserver.Handle(t.handle)},
	}}
}

func (t *tracer) handle(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var req models.PolicyTraceRequest
	if err := apiserver.DecodeJSON(w, r, &req); err != nil {
		return nil, 0, err
	}
	resp, err := t.trace(req)
	if err != nil {
		return nil, 0, err
	}
	return resp, http.StatusOK, nil
}

// trace evaluates the flow on a snapshot of the tables, computed from
// scratch, as the datapath would: the source's egress policy looked up
// with the destination's identity, the destination's ingress policy with
// the source's; in each, a matching deny (under the peer's identity or
// the wildcard 0) wins, then a matching allow, then default deny.
func (t *tracer) trace(req models.PolicyTraceRequest) (*models.PolicyTraceResponse, error) {
	proto, err := traceProtocol(req.Protocol)
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	if len(req.SrcLabels) == 0 || len(req.DstLabels) == 0 {
		return nil, apiserver.Errorf(http.StatusBadRequest, "src-labels and dst-labels are required (\"k8s:app=web\", \"reserved:host\", \"cidr:192.0.2.1\")")
	}
	txn := t.c.db.ReadTxn()
	snap := newSnapshot(t.c.cfg, statedb.Collect(t.rules.All(txn)), statedb.Collect(t.identities.All(txn)), t.c.cidr.prefixes())

	resp := &models.PolicyTraceResponse{Rules: []models.PolicyTraceRule{}}
	src, err := t.resolve(txn, snap, req.SrcLabels, hypotheticalSrc, &resp.Explanation, "source")
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("src-labels: %w", err))
	}
	dst, err := t.resolve(txn, snap, req.DstLabels, hypotheticalDst, &resp.Explanation, "destination")
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, fmt.Errorf("dst-labels: %w", err))
	}
	for _, p := range []*resolvedPeer{src, dst} {
		if p.hypothetical {
			snap.addIdentity(p.info)
		}
	}
	resp.Source, resp.Destination = src.model(), dst.model()
	if !src.endpoint && !dst.endpoint {
		return nil, apiserver.Errorf(http.StatusBadRequest, "neither end of the flow is an endpoint: Membrane enforces policy on endpoints only")
	}
	if t.c.cfg.EnablePolicy == EnforcementNever {
		resp.Explanation = append(resp.Explanation, "--enable-policy=never: no endpoint enforces policy")
	}

	var decisive []string
	verdict, reason := VerdictAllowed, ""
	stage := func(dir uint8, ep, peer *resolvedPeer) *models.PolicyTraceStage {
		pol := snap.policyOf(ep.info.labels)
		st, rules := evaluate(t.c.cfg, pol, dir, peer.info.id, proto, req.Dport)
		name := stageName(dir)
		resp.Explanation = append(resp.Explanation, name+": "+st.Reason)
		for _, e := range st.Entries {
			resp.Explanation = append(resp.Explanation, fmt.Sprintf("  matches %s %s (rules %s)", verdictWord(e.Deny), tables.PolicyKey(e.Key), strings.Join(e.RuleKeys, ", ")))
		}
		// The first point that drops the packet decides: the source's
		// egress comes before the destination's ingress.
		if st.Verdict == VerdictDenied && verdict == VerdictAllowed {
			verdict, reason, decisive = VerdictDenied, name+": "+st.Reason, rules
		}
		return st
	}
	if src.endpoint {
		resp.Egress = stage(datapath.DirEgress, src, dst)
		resp.EgressEnforced = resp.Egress.Enforced
	} else {
		resp.Explanation = append(resp.Explanation, "egress of the source: not an endpoint, no policy applies")
	}
	if dst.endpoint {
		resp.Ingress = stage(datapath.DirIngress, dst, src)
		resp.IngressEnforced = resp.Ingress.Enforced
	} else {
		resp.Explanation = append(resp.Explanation, "ingress of the destination: not an endpoint, no policy applies")
	}
	if verdict == VerdictAllowed {
		reason, decisive = allowedReason(t.c.cfg, resp.Egress, resp.Ingress)
	}
	resp.Verdict, resp.Reason = verdict, reason
	slices.Sort(decisive)
	for _, k := range slices.Compact(decisive) {
		resp.Rules = append(resp.Rules, traceRule(snap, k))
	}
	resp.Explanation = append(resp.Explanation, "verdict: "+verdict)
	return resp, nil
}

// stageName names an enforcement point of a traced flow.
func stageName(dir uint8) string {
	if dir == datapath.DirIngress {
		return "ingress of the destination"
	}
	return "egress of the source"
}

// allowedReason says why a flow every enforcement point let through is
// allowed: the enforced points, each with the rules whose entries allowed
// it (which are also the rules returned); when none is enforced, that
// no policy applies.
func allowedReason(cfg Config, egress, ingress *models.PolicyTraceStage) (string, []string) {
	var parts, rules []string
	for _, p := range []struct {
		dir uint8
		st  *models.PolicyTraceStage
	}{{datapath.DirEgress, egress}, {datapath.DirIngress, ingress}} {
		if p.st == nil || !p.st.Enforced {
			continue
		}
		parts = append(parts, stageName(p.dir)+": "+p.st.Reason)
		for _, e := range p.st.Entries {
			rules = append(rules, e.RuleKeys...)
		}
	}
	if len(parts) > 0 {
		return strings.Join(parts, "; "), rules
	}
	if cfg.EnablePolicy == EnforcementNever {
		return "not enforced: --enable-policy=never", nil
	}
	switch {
	case egress != nil && ingress != nil:
		return "not enforced: neither the egress of the source nor the ingress of the destination enforces policy", nil
	case egress != nil:
		return "not enforced: the egress of the source does not enforce policy (the destination is not an endpoint)", nil
	default:
		return "not enforced: the ingress of the destination does not enforce policy (the source is not an endpoint)", nil
	}
}

// ruleList names rules in a reason: "rule 1/0", "rules 1/0, 2/0"; the
// engine's own entries by their names: "(allow-localhost)",
// "rule 1/0 and (allow-localhost)".
func ruleList(keys []string) string {
	var rules, own []string
	for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
		if strings.HasPrefix(k, "(") {
			own = append(own, k)
		} else {
			rules = append(rules, k)
		}
	}
	var parts []string
	switch len(rules) {
	case 0:
	case 1:
		parts = append(parts, "rule "+rules[0])
	default:
		parts = append(parts, "rules "+strings.Join(rules, ", "))
	}
	return strings.Join(append(parts, own...), " and ")
}

// evaluate looks the packet up in one direction of a computed policy.
// It returns the stage, whose reason names what decided it (the rules
// whose entries matched, or those that turned default deny on), and the
// rules that decide it.
func evaluate(cfg Config, pol *identityPolicy, dir uint8, peer tables.NumericIdentity, proto uint8, port uint16) (*models.PolicyTraceStage, []string) {
	st := &models.PolicyTraceStage{Entries: []models.PolicyEntry{}, Rules: pol.rules}
	if st.Rules == nil {
		st.Rules = []string{}
	}
	st.Enforced = pol.ingressEnforced
	if dir == datapath.DirEgress {
		st.Enforced = pol.egressEnforced
	}
	if !st.Enforced {
		st.Verdict, st.Reason = VerdictAllowed, "not enforced: no rule selecting the endpoint turns default deny on for this direction, and no deny rule applies"
		if cfg.EnablePolicy == EnforcementNever {
			st.Reason = "not enforced: --enable-policy=never"
		}
		return st, nil
	}
	var denies, allows []tables.PolicyEntry
	for _, e := range pol.entries {
		if e.Key.Direction != dir || (e.Key.Identity != peer && e.Key.Identity != 0) || !portProtoOf(e.Key).matches(proto, port) {
			continue
		}
		if e.Deny {
			denies = append(denies, e)
		} else {
			allows = append(allows, e)
		}
	}
	matched := allows
	if len(denies) > 0 {
		matched = denies
	}
	var rules []string
	for _, e := range matched {
		st.Entries = append(st.Entries, entryModel(e))
		rules = append(rules, e.RuleKeys...)
	}
	switch {
	case len(denies) > 0:
		st.Verdict, st.Reason = VerdictDenied, "denied by "+ruleList(rules)+" (a deny wins over any allow)"
	case len(allows) > 0:
		st.Verdict, st.Reason = VerdictAllowed, "allowed by "+ruleList(rules)
		switch {
		case slices.Equal(rules, []string{RuleNoDefaultDeny}):
			st.Reason += ": no rule turns default deny on for this direction, and no deny matches"
		case slices.Equal(rules, []string{RuleAllowLocalhost}):
			st.Reason += ": --allow-localhost=always lets the host reach endpoints whose ingress is default deny"
		}
	default:
		rules = pol.defaultDenyBy[dir]
		st.Verdict = VerdictDenied
		if len(rules) == 0 {
			st.Reason = "default deny (--enable-policy=always): no entry allows the flow"
		} else {
			st.Reason = "default deny (turned on by " + ruleList(rules) + "): no entry allows the flow"
		}
	}
	return st, rules
}

// entryModel is a computed policy entry as a trace shows it.
func entryModel(e tables.PolicyEntry) models.PolicyEntry {
	return models.PolicyEntry{Key: models.PolicyKey(e.Key), Deny: e.Deny, RuleKeys: e.RuleKeys}
}

// matches reports whether a packet of protocol proto to port (ICMP type)
// matches.
func (p portProto) matches(proto uint8, port uint16) bool {
	return (p.proto == datapath.ProtoAny || p.proto == proto) && p.lo <= port && port <= p.hi
}

func verdictWord(deny bool) string {
	if deny {
		return "deny"
	}
	return "allow"
}

func traceRule(snap *snapshot, key string) models.PolicyTraceRule {
	switch key {
	case RuleAllowLocalhost:
		return models.PolicyTraceRule{Key: key, Description: "--allow-localhost=always: the host may reach every endpoint with ingress default deny"}
	case RuleNoDefaultDeny:
		return models.PolicyTraceRule{Key: key, Description: "no rule turns default deny on for this direction: what no deny rule matches is allowed"}
	}
	r, ok := snap.rule(key)
	if !ok {
		return models.PolicyTraceRule{Key: key}
	}
	return models.PolicyTraceRule{Key: key, Description: r.desc, Namespace: r.row.Namespace, Labels: r.row.Labels}
}

// traceProtocol reads a traced packet's protocol: TCP when omitted.
func traceProtocol(s string) (uint8, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return datapath.ProtoTCP, nil
	}
	if p, ok := datapath.ParseProtocol(s); ok {
		return p, nil
	}
	return 0, fmt.Errorf("protocol %q: want %s or a protocol number (a packet has one protocol, not ANY)", s, strings.Join(datapath.ProtocolNames(), ", "))
}

// resolvedPeer is one end of a traced flow.
type resolvedPeer struct {
	info         *identityInfo
	hypothetical bool // no identity has these labels
	endpoint     bool // policy is enforced on it
}

func (p *resolvedPeer) model() models.PolicyTracePeer {
	id := p.info.id
	if p.hypothetical {
		id = 0
	}
	return models.PolicyTracePeer{Identity: id, Labels: p.info.labels.Strings()}
}

// resolve finds the identity of a label set: "cidr:ADDR" is the CIDR
// identity whose prefix holds ADDR most specifically (world if none);
// otherwise the identity whose labels are exactly these (a label without
// source matches any source); otherwise a hypothetical cluster identity
// with these labels, matched by the selectors directly.
func (t *tracer) resolve(txn statedb.ReadTxn, snap *snapshot, ss []string, synthetic tables.NumericIdentity, expl *[]string, what string) (*resolvedPeer, error) {
	if len(ss) == 1 && strings.HasPrefix(ss[0], labels.SourceCIDR+":") {
		p, err := parsePrefix(strings.TrimPrefix(ss[0], labels.SourceCIDR+":"))
		if err != nil {
			return nil, err
		}
		var best *identityInfo
		for _, info := range snap.identities {
			if info.kind == kindCIDR && inside(p, info.prefix) && (best == nil || info.prefix.Bits() > best.prefix.Bits()) {
				best = info
			}
		}
		if best == nil {
			best = reservedInfo(snap, tables.IdentityWorld)
			*expl = append(*expl, fmt.Sprintf("%s: %s is in no prefix of a rule: identity %d (world)", what, p, best.id))
		} else {
			*expl = append(*expl, fmt.Sprintf("%s: %s is in %s: CIDR identity %d", what, p, best.prefix, best.id))
		}
		return &resolvedPeer{info: best}, nil
	}
	ls, err := labels.ParseList(ss, labels.SourceAny)
	if err != nil {
		return nil, err
	}
	var found []*identityInfo
	for _, id := range slices.Sorted(maps.Keys(snap.identities)) {
		info := snap.identities[id]
		if info.kind != kindCIDR && sameLabels(ls, info.labels) {
			found = append(found, info)
		}
	}
	if len(found) == 0 && len(ls) == 1 && ls[0].Source == labels.SourceReserved {
		for id, name := range tables.ReservedIdentities {
			if name == ls[0].Key {
				found = append(found, reservedInfo(snap, id))
			}
		}
	}
	if len(found) == 0 {
		info := &identityInfo{id: synthetic, kind: kindCluster, labels: ls}
		*expl = append(*expl, fmt.Sprintf("%s: no identity has labels %s: matching them directly as an endpoint's", what, ls))
		if _, ok := ls.Get(labels.SourceK8s, labels.NamespaceKey); !ok {
			if _, ok := ls.Get(labels.SourceAny, labels.NamespaceKey); !ok {
				*expl = append(*expl, fmt.Sprintf("%s: note: no %s:%s label, which every pod has: no rule of a CiliumNetworkPolicy applies to it, "+
					"and peer selectors scoped to a namespace, or clusterwide to pods, do not select it",
					what, labels.SourceK8s, labels.NamespaceKey))
			}
		}
		return &resolvedPeer{info: info, hypothetical: true, endpoint: true}, nil
	}
	info := found[0]
	if len(found) > 1 {
		ids := make([]string, len(found))
		for i, f := range found {
			ids[i] = strconv.FormatUint(uint64(f.id), 10)
		}
		*expl = append(*expl, fmt.Sprintf("%s: labels %s match identities %s: using %d (give the sources to choose)", what, ls, strings.Join(ids, ", "), info.id))
	} else {
		*expl = append(*expl, fmt.Sprintf("%s: identity %d (%s)", what, info.id, info.labels))
	}
	_, _, used := t.endpoints.Get(txn, tables.EndpointIdentityIndex.Query(info.id))
	return &resolvedPeer{info: info, endpoint: info.kind == kindCluster || used}, nil
}

// reservedInfo returns a reserved identity, from the table if it is there.
func reservedInfo(snap *snapshot, id tables.NumericIdentity) *identityInfo {
	if info, ok := snap.identities[id]; ok {
		return info
	}
	return &identityInfo{id: id, kind: kindReserved,
		labels: labels.New(labels.Label{Source: labels.SourceReserved, Key: tables.ReservedIdentities[id]})}
}

// sameLabels reports whether the given labels are exactly an identity's,
// a given label of source "any" matching a label of any source.
func sameLabels(given, have labels.Labels) bool {
	if len(given) != len(have) {
		return false
	}
	used := make([]bool, len(have))
	for _, g := range given {
		i := slices.IndexFunc(have, func(h labels.Label) bool {
			return h.Key == g.Key && h.Value == g.Value && (g.Source == labels.SourceAny || g.Source == h.Source)
		})
		for i >= 0 && used[i] {
			j := slices.IndexFunc(have[i+1:], func(h labels.Label) bool {
				return h.Key == g.Key && h.Value == g.Value && (g.Source == labels.SourceAny || g.Source == h.Source)
			})
			if j < 0 {
				i = -1
			} else {
				i += 1 + j
			}
		}
		if i < 0 {
			return false
		}
		used[i] = true
	}
	return true
}
