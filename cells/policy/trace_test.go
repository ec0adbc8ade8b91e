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
			VerdictDenied, "deny rule", []string{"2/0"}, true, true, ""},
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
