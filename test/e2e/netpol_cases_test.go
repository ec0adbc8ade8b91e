package e2e

// The cases of TestNetworkPolicyConformance, named and in the order of the
// upstream suite (kubernetes/kubernetes
// test/e2e/network/netpol/network_policy.go); policies are written as
// YAML, the truth tables as upstream's Expect/ExpectPeer calls.

func netpolCases(e *netpolEnv) []npCase {
	allow := func(r *reach) {}
	denyIngressX := npYAML("x", "deny-ingress", `{podSelector: {}}`)
	return []npCase{
		{"default-deny-ingress", []npStep{{
			apply: []string{npYAML("x", "deny-ingress", `{podSelector: {}, ingress: []}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x", false) },
		}}},
		{"default-deny-all", []npStep{{
			apply: []string{npYAML("x", "deny-all", `{podSelector: {}, policyTypes: [Ingress, Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x", false); r.set("x", "", false) },
		}}},
		{"allow traffic from pods within server namespace based on PodSelector", []npStep{{
			apply: []string{npYAML("x", "x-a-allows-x-b", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x/a", false); r.set("x/b", "x/a", true) },
		}}},
		{"allow ingress traffic for a target", []npStep{{
			apply: []string{denyIngressX,
				npYAML("x", "allow-all-to-a", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]}`)},
			port: "80",
			want: func(r *reach) { r.set("", "x", false); r.set("", "x/a", true) },
		}}},
		{"allow ingress traffic from pods in all namespaces", []npStep{{
			apply: []string{npYAML("x", "allow-from-another-ns", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {}}}]}]}`)},
			port:  "80",
			want:  allow,
		}}},
		{"allow traffic only from a different namespace, based on NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-client-a-via-ns-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x", "x/a", false); r.set("z", "x/a", false) },
		}}},
		{"PodSelector with MatchExpressions", []npStep{{
			apply: []string{npYAML("x", "x-a-allows-x-b", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x/a", false); r.set("x/b", "x/a", true) },
		}}},
		{"NamespaceSelector with MatchExpressions", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-match-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: ["y"]}]}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x", "x/a", false); r.set("z", "x/a", false) },
		}}},
		{"PodSelector or NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-match-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [
				{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]}},
				{podSelector: {matchLabels: {pod: b}}}]}]}`)},
			port: "80",
			want: func(r *reach) { r.set("x/a", "x/a", false); r.set("x/c", "x/a", false) },
		}}},
		{"PodSelector and NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-podselector-and-nsselector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [
				{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]}, podSelector: {matchLabels: {pod: b}}}]}]}`)},
			port: "80",
			want: func(r *reach) { r.set("", "x/a", false); r.set("y/b", "x/a", true); r.set("z/b", "x/a", true) },
		}}},
		{"Multiple PodSelectors and NamespaceSelectors", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-z-pod-b-c", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [
				{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["x"]}]},
				 podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]}`)},
			port: "80",
			want: func(r *reach) { r.set("x", "x/a", false); r.set("y/a", "x/a", false); r.set("z/a", "x/a", false) },
		}}},
		{"any PodSelectors", []npStep{{
			apply: []string{npYAML("x", "allow-ns-x-pod-b-c", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x/a", false); r.set("x/b", "x/a", true); r.set("x/c", "x/a", true) },
		}}},
		{"allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-pod-a-via-namespace-pod-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("", "x/a", false); r.set("y/a", "x/a", true) },
		}}},
		{"based on Ports", []npStep{{
			apply: []string{npYAML("x", "allow-client-a-via-ns-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: TCP}]}]}`)},
			port:  "81",
			want:  func(r *reach) { r.set("x", "x/a", false); r.set("y", "x/a", true); r.set("z", "x/a", false) },
		}}},
		{"multiple, stacked policies with overlapping podSelectors", func() []npStep {
			only81 := func(r *reach) { r.set("x", "x/a", false); r.set("y", "x/a", true); r.set("z", "x/a", false) }
			return []npStep{
				{apply: []string{npYAML("x", "allow-client-a-via-ns-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: TCP}]}]}`)},
					port: "81", want: only81},
				{port: "80", want: func(r *reach) { r.set("", "x/a", false) }},
				{apply: []string{npYAML("x", "allow-client-a-via-ns-selector-80", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 80, protocol: TCP}]}]}`)},
					port: "80", want: only81},
			}
		}()},
		{"allow-all policy", []npStep{
			{apply: []string{npYAML("x", "allow-all", `{podSelector: {}, ingress: [{}]}`)}, port: "80", want: allow},
			{port: "81", want: allow},
		}},
		{"enforce updated policy", []npStep{
			{apply: []string{npYAML("x", "allow-all-mutate-to-deny-all", `{podSelector: {}, ingress: [{}]}`)}, port: "81", want: allow},
			// The same object again: it replaces the first version.
			{apply: []string{npYAML("x", "allow-all-mutate-to-deny-all", `{podSelector: {}, ingress: []}`)}, port: "81",
				want: func(r *reach) { r.set("", "x", false) }},
		}},
		{"allow ingress access from updated namespace", []npStep{
			{apply: []string{npYAML("x", "allow-client-a-via-ns-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]}`)},
				port: "80", want: func(r *reach) { r.set("", "x/a", false) }},
			{nsLabels: map[string]map[string]string{"y": {"ns2": "updated"}},
				port: "80", want: func(r *reach) { r.set("", "x/a", false); r.set("y", "", true) }},
		}},
		{"allow ingress access from updated pod", []npStep{
			{apply: []string{npYAML("x", "allow-client-a-via-pod-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]}`)},
				port: "80", want: func(r *reach) { r.set("", "x/a", false) }},
			{podLabels: map[string]map[string]string{"x/b": {"pod2": "updated"}},
				port: "80", want: func(r *reach) { r.set("", "x/a", false); r.set("x/b", "x/a", true) }},
		}},
		{"deny ingress from pods on other namespaces", []npStep{{
			apply: []string{npYAML("x", "deny-empty-policy", `{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("y", "x", false); r.set("z", "x", false) },
		}}},
		{"deny ingress access to updated pod", []npStep{
			{apply: []string{npYAML("x", "deny-ingress-via-label-selector", `{podSelector: {matchLabels: {target: isolated}}, policyTypes: [Ingress]}`)},
				port: "80", want: allow},
			{podLabels: map[string]map[string]string{"x/a": {"target": "isolated"}},
				port: "80", want: func(r *reach) { r.set("", "x/a", false) }},
		}},
		{"deny egress from pods based on PodSelector", []npStep{{
			apply: []string{npYAML("x", "deny-egress-pod-a", `{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x/a", "", false) },
		}}},
		{"deny egress from all pods in a namespace", []npStep{{
			apply: []string{npYAML("x", "deny-egress-ns-x", `{podSelector: {}, policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x", "", false) },
		}}},
		{"work with Ingress, Egress specified together", func() []npStep {
			doc := npYAML("x", "allow-client-a-via-pod-selector", `{podSelector: {matchLabels: {pod: a}},
				ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}],
				egress: [{ports: [{port: 80}]}], policyTypes: [Egress, Ingress]}`)
			return []npStep{
				{apply: []string{doc}, port: "80", want: func(r *reach) { r.set("", "x/a", false); r.set("x/b", "x/a", true) }},
				{port: "81", want: func(r *reach) { r.set("", "x/a", false); r.set("x/a", "", false); r.set("x/b", "x/a", true) }},
			}
		}()},
		{"support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", []npStep{{
			apply: []string{
				npYAML("x", "allow-to-ns-y-pod-a", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}], policyTypes: [Egress]}`),
				npYAML("y", "allow-from-xa-on-ya-match-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "x"}}, podSelector: {matchLabels: {pod: a}}}]}]}`),
				npYAML("y", "allow-from-xa-on-yb-match-selector", `{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "x"}}, podSelector: {matchLabels: {pod: a}}}]}]}`),
			},
			port: "80",
			want: func(r *reach) {
				r.set("x/a", "", false)
				r.set("", "y/a", false)
				r.set("x/a", "y/a", true)
				r.set("", "y/b", false)
			},
		}}},
		{"enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-to-ns-y-pod-a", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}], policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x/a", "", false); r.set("x/a", "y/a", true) },
		}}},
		{"enforce ingress policy allowing any port traffic to a server on a specific protocol", []npStep{
			{apply: []string{npYAML("x", "allow-ingress-by-proto", `{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP}]}]}`)},
				port: "80", want: allow},
			{port: "80", proto: "udp", want: func(r *reach) { r.set("", "x/a", false) }},
		}},
		{"enforce multiple ingress policies with ingress allow-all policy taking precedence", []npStep{
			{apply: []string{npYAML("x", "allow-ingress-port-80", `{podSelector: {}, ingress: [{ports: [{port: 80}]}]}`)},
				port: "81", want: func(r *reach) { r.set("", "x", false) }},
			{apply: []string{npYAML("x", "allow-ingress", `{podSelector: {}, ingress: [{}]}`)}, port: "81", want: allow},
		}},
		{"enforce multiple egress policies with egress allow-all policy taking precedence", []npStep{
			{apply: []string{npYAML("x", "allow-egress-port-80", `{podSelector: {}, egress: [{ports: [{port: 80}]}], policyTypes: [Egress]}`)},
				port: "81", want: func(r *reach) { r.set("x", "", false) }},
			{apply: []string{npYAML("x", "allow-egress", `{podSelector: {}, egress: [{}], policyTypes: [Egress]}`)}, port: "81", want: allow},
		}},
		{"stop enforcing policies after they are deleted", []npStep{
			{apply: []string{npYAML("x", "deny-all", `{podSelector: {}, policyTypes: [Ingress, Egress]}`)},
				port: "80", want: func(r *reach) { r.set("x", "", false); r.set("", "x", false) }},
			{delete: []string{"x/deny-all"}, port: "80", want: allow},
		}},
		{"ipBlock: egress to an address outside the cluster (upstream: to a server in a CIDR block)", []npStep{{
			apply: []string{npYAML("x", "allow-client-a-via-cidr-egress-rule", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{ipBlock: {cidr: `+e.out.ip+`/32}}]}], policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x/a", "", false) },
			outside: func() []fact {
				return []fact{
					tcpFact("x/a -> the allowed address", e.pods["x/a"], e.out.ip, "80", true),
					tcpFact("x/a -> another address outside", e.pods["x/a"], e.out.ip2, "80", false),
					tcpFact("x/b (not selected) -> outside", e.pods["x/b"], e.out.ip2, "80", true),
				}
			},
		}}},
		{"ipBlock: except (upstream: except clause while egress access to server in CIDR block)", []npStep{{
			apply: []string{npYAML("x", "allow-client-a-via-cidr-egress-rule", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{ipBlock: {cidr: `+e.out.ip+`/24, except: [`+e.out.ip2+`/32]}}]}], policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x/a", "", false) },
			outside: func() []fact {
				return []fact{
					tcpFact("x/a -> inside the cidr", e.pods["x/a"], e.out.ip, "80", true),
					tcpFact("x/a -> the excepted address", e.pods["x/a"], e.out.ip2, "80", false),
				}
			},
		}}},
		{"ipBlock: an address in one policy's except and another's cidr is allowed (upstream: IP overlapping both IPBlock.CIDR and IPBlock.Except)", []npStep{{
			apply: []string{
				npYAML("x", "allow-client-a-via-cidr-egress-rule", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{ipBlock: {cidr: `+e.out.ip+`/24, except: [`+e.out.ip2+`/32]}}]}], policyTypes: [Egress]}`),
				npYAML("x", "allow-client-a-to-the-excepted-address", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{ipBlock: {cidr: `+e.out.ip2+`/32}}]}], policyTypes: [Egress]}`),
			},
			port: "80",
			want: func(r *reach) { r.set("x/a", "", false) },
			outside: func() []fact {
				return []fact{
					tcpFact("x/a -> inside the cidr", e.pods["x/a"], e.out.ip, "80", true),
					tcpFact("x/a -> excepted by one policy, allowed by the other", e.pods["x/a"], e.out.ip2, "80", true),
				}
			},
		}}},
		{"enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", []npStep{
			{apply: []string{npYAML("x", "allow-egress-for-target", `{podSelector: {matchLabels: {pod: a}}, egress: [{}], policyTypes: [Egress]}`)}, port: "80", want: allow},
			{apply: []string{npYAML("x", "deny-ingress-via-label-selector", `{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress]}`)},
				port: "80", want: func(r *reach) { r.set("", "x/a", false) }},
		}},
		{"not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'", []npStep{{
			apply: []string{denyIngressX,
				npYAML("x", "allow-only-sctp-ingress-on-port-81", `{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: SCTP}]}]}`)},
			port: "81",
			want: func(r *reach) { r.set("", "x", false) },
		}}},
		{"properly isolate pods that are selected by a policy allowing SCTP", []npStep{{
			apply: []string{npYAML("x", "allow-only-sctp-ingress-on-port-80", `{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80, protocol: SCTP}]}]}`)},
			port:  "81",
			want:  func(r *reach) { r.set("", "x/a", false) },
		}}},
		{"not allow access by TCP when a policy specifies only UDP", []npStep{{
			apply: []string{npYAML("x", "allow-only-udp-ingress-on-port-81", `{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: UDP}]}]}`)},
			port:  "81",
			want:  func(r *reach) { r.set("", "x/a", false) },
		}}},
		{"enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", []npStep{{
			apply: []string{npYAML("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}]}]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x", "x/a", false); r.set("z", "x/a", false) },
		}}},
		{"enforce policy based on NamespaceSelector with MatchExpressions using default ns label", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-match-selector-for-immutable-ns-label", `{podSelector: {matchLabels: {pod: a}}, egress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["y"]}]}}]}], policyTypes: [Egress]}`)},
			port:  "80",
			want:  func(r *reach) { r.set("x/a", "y", false) },
		}}},

		// "NetworkPolicy between server and client using UDP".
		{"UDP: default-deny-ingress", []npStep{{
			apply: []string{npYAML("x", "deny-all", `{podSelector: {}, ingress: []}`)},
			port:  "80", proto: "udp",
			want: func(r *reach) { r.set("", "x", false) },
		}}},
		{"UDP: based on Ports", []npStep{{
			apply: []string{npYAML("x", "allow-ingress-on-port-81-ns-x", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: UDP}]}]}`)},
			port:  "81", proto: "udp",
			want: func(r *reach) { r.set("x", "x/a", false); r.set("z", "x/a", false) },
		}}},
		{"UDP: allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []npStep{{
			apply: []string{npYAML("x", "allow-ns-y-pod-a-via-namespace-pod-selector", `{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}]}`)},
			port:  "80", proto: "udp",
			want: func(r *reach) { r.set("", "x/a", false); r.set("y/a", "x/a", true) },
		}}},
	}
}
