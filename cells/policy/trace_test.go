package policy

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
	policyapi "github.com/membrane-net/membrane/policy/api"
)

func traceRuleKeys(r *models.PolicyTraceResponse) []string {
	var out []string
	for _, rule := range r.Rules {
		out = append(out, rule.Key)
	}
	return out
}

func TestTrace(t *testing.T) {
	e := startTestEngine(t, DefaultConfig)
	e.addIdentities(t, computeIdentities()...)
	e.addEndpoints(t, endpoint(1, 256), endpoint(2, 257))
	allow := allowDBToWeb80()
	allow.Rule.Description = "db may reach web on 80"
	e.addRules(t, allow,
		rule("2/0", 2, policyapi.Rule{
			EndpointSelector: sel("app", "web"),
			Description:      "nobody reaches web's admin port",
			IngressDeny:      []policyapi.IngressDenyRule{{FromEntities: []policyapi.Entity{policyapi.EntityAll}, ToPorts: []policyapi.PortRule{tcp("9090")}}},
		}),
		rule("3/0", 3, policyapi.Rule{
			EndpointSelector: sel("app", "db"),
			Description:      "db talks to web and 192.0.2.0/24 only",
			Egress: []policyapi.EgressRule{
				{ToEndpoints: []policyapi.EndpointSelector{esel("app", "web")}},
				{ToCIDR: []string{"192.0.2.0/24"}, ToPorts: []policyapi.PortRule{tcp("443")}},
			},
		}),
	)
	e.sync(t)

	web := []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"}
	db := []string{"app=db", "io.kubernetes.pod.namespace=prod"} // any source
	cases := []struct {
		name     string
		req      models.PolicyTraceRequest
		verdict  string
		reason   string
		rules    []string
		ingress  bool
		egress   bool
		noStages string // "egress" or "ingress": that stage does not apply
	}{
		{"allowed by an allow rule", models.PolicyTraceRequest{SrcLabels: db, DstLabels: web, Dport: 80, Protocol: "TCP"},
			VerdictAllowed, "allowed", []string{"1/0", "3/0"}, true, true, ""},
		{"another port: default deny", models.PolicyTraceRequest{SrcLabels: db, DstLabels: web, Dport: 81},
			VerdictDenied, "default deny", []string{"1/0", "2/0"}, true, true, ""}, // both turn default deny on
		{"deny wins", models.PolicyTraceRequest{SrcLabels: db, DstLabels: web, Dport: 9090},
			VerdictDenied, "denied by rule 2/0", []string{"2/0"}, true, true, ""},
		{"egress default deny of the source", models.PolicyTraceRequest{SrcLabels: db, DstLabels: []string{"k8s:app=cache"}, Dport: 80},
			VerdictDenied, "egress of the source: default deny", []string{"3/0"}, false, true, ""},
		{"unknown labels are matched directly", models.PolicyTraceRequest{SrcLabels: []string{"k8s:app=cache"}, DstLabels: db, Dport: 5432},
			VerdictAllowed, "not enforced", nil, false, false, ""},
		{"to a CIDR: the source's egress only", models.PolicyTraceRequest{SrcLabels: db, DstLabels: []string{"cidr:192.0.2.10"}, Dport: 443},
			VerdictAllowed, "allowed", []string{"3/0"}, false, true, "ingress"},
		{"to an address of no rule: world", models.PolicyTraceRequest{SrcLabels: db, DstLabels: []string{"cidr:198.51.100.1"}, Dport: 443},
			VerdictDenied, "default deny", []string{"3/0"}, false, true, "ingress"},
		{"from the host: allow-localhost", models.PolicyTraceRequest{SrcLabels: []string{"reserved:host"}, DstLabels: web, Dport: 22},
			VerdictAllowed, "allowed", []string{RuleAllowLocalhost}, true, false, "egress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, resp, body := e.trace(t, tc.req)
			if code != http.StatusOK {
				t.Fatalf("%d: %s", code, body)
			}
			if resp.Verdict != tc.verdict || !strings.Contains(resp.Reason, tc.reason) {
				t.Errorf("verdict %q (%s), want %q (%s)\n%s", resp.Verdict, resp.Reason, tc.verdict, tc.reason, strings.Join(resp.Explanation, "\n"))
			}
			if got := traceRuleKeys(resp); !slices.Equal(got, tc.rules) {
				t.Errorf("rules %v, want %v", got, tc.rules)
			}
			if resp.IngressEnforced != tc.ingress || resp.EgressEnforced != tc.egress {
				t.Errorf("enforced ingress %v egress %v, want %v %v", resp.IngressEnforced, resp.EgressEnforced, tc.ingress, tc.egress)
			}
			switch tc.noStages {
			case "ingress":
				if resp.Ingress != nil {
					t.Errorf("ingress stage for a non-endpoint destination: %+v", resp.Ingress)
				}
			case "egress":
				if resp.Egress != nil {
					t.Errorf("egress stage for a non-endpoint source: %+v", resp.Egress)
				}
			}
			if len(resp.Explanation) == 0 {
				t.Error("no explanation")
			}
		})
	}

	// Descriptions come with the rules.
	_, resp, _ := e.trace(t, models.PolicyTraceRequest{SrcLabels: db, DstLabels: web, Dport: 80})
	if resp.Rules[0].Description != "db may reach web on 80" || resp.Source.Identity != 257 || resp.Destination.Identity != 256 {
		t.Errorf("trace: %+v", resp)
	}
}

func TestTraceInvalid(t *testing.T) {
	e := startTestEngine(t, DefaultConfig)
	e.sync(t)
	for _, req := range []models.PolicyTraceRequest{
		{DstLabels: []string{"app=web"}},
		{SrcLabels: []string{"app=web"}, DstLabels: []string{"app=db"}, Protocol: "ANY"},
		{SrcLabels: []string{"app=web"}, DstLabels: []string{"app=db"}, Protocol: "carrier-pigeon"},
		{SrcLabels: []string{"app=web!"}, DstLabels: []string{"app=db"}},
		{SrcLabels: []string{"cidr:192.0.2.1"}, DstLabels: []string{"reserved:world"}},
	} {
		if code, _, body := e.trace(t, req); code != http.StatusBadRequest {
			t.Errorf("%+v: %d %s, want 400", req, code, body)
		}
	}
}

func TestTraceNever(t *testing.T) {
	e := startTestEngine(t, Config{EnablePolicy: EnforcementNever, AllowLocalhost: AllowLocalhostAlways})
	e.addIdentities(t, computeIdentities()...)
	e.addRules(t, allowDBToWeb80())
	e.sync(t)
	_, resp, body := e.trace(t, models.PolicyTraceRequest{SrcLabels: []string{"app=cache"}, DstLabels: []string{"app=web", "io.kubernetes.pod.namespace=prod"}, Dport: 80})
	if resp == nil || resp.Verdict != VerdictAllowed || resp.IngressEnforced {
		t.Errorf("enable-policy=never: %s", body)
	}
}

// TestTraceReasons: the reason names the stage that decided the verdict,
// for each kind of verdict: the rules that allowed the flow where it is
// enforced, the rule or the default deny that dropped it (and on which
// side, even when the other side allowed it), or that nothing enforces
// policy on its way.
func TestTraceReasons(t *testing.T) {
	ns := "k8s:io.kubernetes.pod.namespace=prod"
	web, db, frontend, cache := []string{"k8s:app=web", ns}, []string{"k8s:app=db", ns}, []string{"k8s:app=frontend", ns}, []string{"k8s:app=cache", ns}
	setup := func(cfg Config) *testEngine {
		e := startTestEngine(t, cfg)
		e.addIdentities(t, append(reserved(),
			ident(256, "app=web", "io.kubernetes.pod.namespace=prod"),
			ident(257, "app=db", "io.kubernetes.pod.namespace=prod"),
			ident(258, "app=frontend", "io.kubernetes.pod.namespace=prod"),
			ident(259, "app=cache", "io.kubernetes.pod.namespace=prod"))...)
		e.addEndpoints(t, endpoint(1, 256), endpoint(2, 257), endpoint(3, 258), endpoint(4, 259))
		e.addRules(t,
			rule("1/0", 1, policyapi.Rule{EndpointSelector: sel("app", "web"), Ingress: []policyapi.IngressRule{{
				FromEndpoints: []policyapi.EndpointSelector{{MatchExpressions: []policyapi.LabelSelectorRequirement{expr("app", opIn, "db", "frontend")}}},
				ToPorts:       []policyapi.PortRule{tcp("80")},
			}}}),
			rule("2/0", 2, policyapi.Rule{EndpointSelector: sel("app", "web"), IngressDeny: []policyapi.IngressDenyRule{{
				FromEntities: []policyapi.Entity{policyapi.EntityAll}, ToPorts: []policyapi.PortRule{tcp("9090")},
			}}}),
			rule("3/0", 3, policyapi.Rule{EndpointSelector: sel("app", "db"), Egress: []policyapi.EgressRule{{
				ToEndpoints: []policyapi.EndpointSelector{esel("app", "web")},
			}}}),
			rule("4/0", 4, policyapi.Rule{EndpointSelector: sel("app", "cache"), EgressDeny: []policyapi.EgressDenyRule{{
				ToCIDR: []string{"192.0.2.0/24"},
			}}, EnableDefaultDeny: &policyapi.DefaultDenyConfig{Egress: boolp(false)}}),
		)
		e.sync(t)
		return e
	}
	type want struct {
		verdict, reason string
		egress, ingress string // the stages' reasons ("" when a side is no endpoint)
	}
	run := func(t *testing.T, e *testEngine, src, dst []string, port uint16, w want) {
		t.Helper()
		code, resp, body := e.trace(t, models.PolicyTraceRequest{SrcLabels: src, DstLabels: dst, Dport: port})
		if code != http.StatusOK {
			t.Fatalf("%d: %s", code, body)
		}
		if resp.Verdict != w.verdict || resp.Reason != w.reason {
			t.Errorf("verdict %s, reason\n  %s\nwant %s,\n  %s", resp.Verdict, resp.Reason, w.verdict, w.reason)
		}
		for _, st := range []struct {
			name string
			got  *models.PolicyTraceStage
			want string
		}{{"egress", resp.Egress, w.egress}, {"ingress", resp.Ingress, w.ingress}} {
			got := ""
			if st.got != nil {
				got = st.got.Reason
			}
			if got != st.want {
				t.Errorf("%s stage reason\n  %s\nwant\n  %s", st.name, got, st.want)
			}
		}
	}
	const (
		notEnforced = "not enforced: no rule selecting the endpoint turns default deny on for this direction, and no deny rule applies"
		webDefault  = "default deny (turned on by rules 1/0, 2/0): no entry allows the flow"
		webDeny     = "denied by rule 2/0 (a deny wins over any allow)"
	)
	e := setup(DefaultConfig)
	for _, tc := range []struct {
		name     string
		src, dst []string
		port     uint16
		want     want
	}{
		{"allowed by a rule where enforced, the other side not enforced", frontend, web, 80, want{VerdictAllowed,
			"ingress of the destination: allowed by rule 1/0", notEnforced, "allowed by rule 1/0"}},
		{"allowed by rules on both sides", db, web, 80, want{VerdictAllowed,
			"egress of the source: allowed by rule 3/0; ingress of the destination: allowed by rule 1/0", "allowed by rule 3/0", "allowed by rule 1/0"}},
		{"denied by a deny rule", frontend, web, 9090, want{VerdictDenied,
			"ingress of the destination: " + webDeny, notEnforced, webDeny}},
		{"default deny", frontend, web, 81, want{VerdictDenied,
			"ingress of the destination: " + webDefault, notEnforced, webDefault}},
		{"denied by the destination, the source allowed it by rule", db, web, 81, want{VerdictDenied,
			"ingress of the destination: " + webDefault, "allowed by rule 3/0", webDefault}},
		{"denied by a deny rule of the destination, the source allowed it by rule", db, web, 9090, want{VerdictDenied,
			"ingress of the destination: " + webDeny, "allowed by rule 3/0", webDeny}},
		{"denied by the source's default deny", db, cache, 6379, want{VerdictDenied,
			"egress of the source: default deny (turned on by rule 3/0): no entry allows the flow",
			"default deny (turned on by rule 3/0): no entry allows the flow", notEnforced}},
		{"denied by the source's deny rule, the destination no endpoint", cache, []string{"cidr:192.0.2.1"}, 443, want{VerdictDenied,
			"egress of the source: denied by rule 4/0 (a deny wins over any allow)", "denied by rule 4/0 (a deny wins over any allow)", ""}},
		{"allowed under a deny rule, without default deny", cache, []string{"cidr:198.51.100.1"}, 443, want{VerdictAllowed,
			"egress of the source: allowed by (no-default-deny): no rule turns default deny on for this direction, and no deny matches",
			"allowed by (no-default-deny): no rule turns default deny on for this direction, and no deny matches", ""}},
		{"not enforced on either side", frontend, cache, 6379, want{VerdictAllowed,
			"not enforced: neither the egress of the source nor the ingress of the destination enforces policy", notEnforced, notEnforced}},
		{"not enforced, the destination no endpoint", frontend, []string{"cidr:198.51.100.1"}, 443, want{VerdictAllowed,
			"not enforced: the egress of the source does not enforce policy (the destination is not an endpoint)", notEnforced, ""}},
		{"not enforced, the source no endpoint", []string{"cidr:198.51.100.1"}, cache, 6379, want{VerdictAllowed,
			"not enforced: the ingress of the destination does not enforce policy (the source is not an endpoint)", "", notEnforced}},
		{"allowed by allow-localhost", []string{"reserved:host"}, web, 22, want{VerdictAllowed,
			"ingress of the destination: allowed by (allow-localhost): --allow-localhost=always lets the host reach endpoints whose ingress is default deny",
			"", "allowed by (allow-localhost): --allow-localhost=always lets the host reach endpoints whose ingress is default deny"}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, e, tc.src, tc.dst, tc.port, tc.want) })
	}

	t.Run("--enable-policy=always", func(t *testing.T) {
		e := setup(Config{EnablePolicy: EnforcementAlways, AllowLocalhost: AllowLocalhostAlways})
		always := "default deny (--enable-policy=always): no entry allows the flow"
		run(t, e, frontend, cache, 6379, want{VerdictDenied, "egress of the source: " + always, always, always})
	})
	t.Run("--enable-policy=never", func(t *testing.T) {
		e := setup(Config{EnablePolicy: EnforcementNever, AllowLocalhost: AllowLocalhostAlways})
		never := "not enforced: --enable-policy=never"
		run(t, e, frontend, web, 9090, want{VerdictAllowed, never, never, never})
	})
}
