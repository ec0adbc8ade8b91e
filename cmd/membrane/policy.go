package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
)

func (a *app) policyCommand() *cobra.Command {
	return groupCommand("policy", "Import, show, delete and trace network policy",
		`Policy is written in Cilium's rule format (JSON or YAML: a list of rules, or
CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy objects) or as Kubernetes
NetworkPolicy objects (translated into rules), against labels, and enforced in the datapath against the identities of those labels. Every
import or delete bumps the policy revision; endpoints report the revision
their datapath enforces (membrane endpoint list).

"membrane bpf policy get ENDPOINT" shows what reached the kernel for one
endpoint; "membrane monitor --type drop" shows what it drops.`,
		`  membrane policy import -f web-allow.yaml
  membrane policy get
  membrane policy trace --src-labels k8s:app=web --dst-labels k8s:app=db --dport 5432/TCP
  membrane policy delete k8s:io.cilium.k8s.policy.name=web-allow`,
		a.policyImportCommand(),
		a.policyGetCommand(),
		a.policyDeleteCommand(),
		a.policyTraceCommand(),
	)
}

func (a *app) policyImportCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "import -f FILE",
		Short: "Import rules from a JSON or YAML file (PUT /v1/policy)",
		Long: `import sends the file as is to the agent (PUT /v1/policy), which parses it, adds
its rules to the repository and answers with the new policy revision. The
agent refuses the whole file (nothing is imported) if any rule is invalid or
uses a field Membrane does not support, naming the rule and the field.
"-" reads stdin. A rule's labels are what "membrane policy delete" selects it by.
Importing an object (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
NetworkPolicy) again replaces the rules of its previous import.`,
		Example: `  membrane policy import -f web-allow.yaml
  kubectl get cnp -A -o yaml | membrane policy import -f -
  kubectl get networkpolicies -A -o yaml | membrane policy import -f -

  # web-allow.yaml: pods labelled app=web accept port 80 from app=frontend.
  apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata:
    name: web-allow
  spec:
    endpointSelector:
      matchLabels:
        app: web
    ingress:
    - fromEndpoints:
      - matchLabels:
          app: frontend
      toPorts:
      - ports:
        - port: "80"
          protocol: TCP`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("no policy file: give -f FILE (- for stdin)")
			}
			data, err := a.readPolicyFile(file)
			if err != nil {
				return err
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			resp, err := c.ImportPolicy(ctx, policyContentType(data), data)
			if err != nil {
				return fmt.Errorf("import policy from %s: %w", file, err)
			}
			return a.renderPolicyAnswer(resp, "imported", "rules")
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "Policy file (JSON or YAML), or - for stdin")
	return cmd
}

func (a *app) readPolicyFile(file string) ([]byte, error) {
	var (
		data []byte
		err  error
	)
	if file == "-" {
		data, err = io.ReadAll(a.stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		name := file
		if file == "-" {
			name = "stdin"
		}
		return nil, fmt.Errorf("policy file %s is empty", name)
	}
	return data, nil
}

// policyContentType tells the agent how the file is written: JSON if it
// starts like a JSON document, YAML otherwise.
func policyContentType(data []byte) string {
	if t := bytes.TrimSpace(data); t[0] == '{' || t[0] == '[' {
		return "application/json"
	}
	return "application/yaml"
}

func (a *app) policyGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "Show the imported rules and the policy revision (GET /v1/policy)",
		Long: `get prints the current policy revision and every rule in the agent's policy
repository: one YAML document per rule, under a comment with the rule's key
(import revision/index), the revision that imported it, where it came from
("api": membrane policy import; "k8s": an object of the cluster), the
namespace of the CiliumNetworkPolicy it came from and its labels (what "membrane policy
delete" selects by). -o json and -o yaml print the agent's answer.`,
		Example: `  membrane policy get
  membrane policy get -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			resp, err := c.GetPolicy(ctx)
			if err != nil {
				return fmt.Errorf("get policy: %w", err)
			}
			return a.renderDocument(resp, func(w io.Writer, _ any) error { return printPolicyRules(w, resp) })
		},
	}
}

// printPolicyRules prints the revision, then each rule as a YAML document
// under a comment that says where it came from.
func printPolicyRules(w io.Writer, p *models.PolicyRulesResponse) error {
	fmt.Fprintf(w, "# policy revision %d: %s\n", p.Revision, plural(len(p.Rules), "rule"))
	for _, r := range p.Rules {
		fmt.Fprintf(w, "---\n# rule %s, imported at revision %d", r.Key, r.Revision)
		if r.Source != "" {
			fmt.Fprintf(w, " from %s", r.Source)
		}
		if r.Namespace != "" {
			fmt.Fprintf(w, ", namespace %s", r.Namespace)
		}
		if len(r.Labels) > 0 {
			fmt.Fprintf(w, ", labels %s", strings.Join(r.Labels, ","))
		}
		fmt.Fprintln(w)
		y, err := yaml.JSONToYAML(r.Rule)
		if err != nil {
			return fmt.Errorf("rule %s: %w", r.Key, err)
		}
		if _, err := w.Write(y); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) policyDeleteCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "delete [--all | LABEL...]",
		Short: "Delete the rules carrying the given labels, or all rules (DELETE /v1/policy)",
		Long: `delete removes from the repository every rule that carries all the given labels
([source:]key[=value], as "membrane policy get" shows them; without a source
a label matches any source), or every rule with --all, and prints how many
went and the new policy revision. Endpoints the rules selected are
regenerated without them. Deleting nothing is an error (HTTP 404). Only
imported rules (from api) are deleted: in Kubernetes mode the rules of the
cluster's objects (from k8s) go with kubectl delete.`,
		Example: `  # The rules of CiliumNetworkPolicy web-allow.
  membrane policy delete k8s:io.cilium.k8s.policy.name=web-allow
  # The rule of NetworkPolicy prod/deny-all.
  membrane policy delete k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy \
      k8s:io.cilium.k8s.policy.namespace=prod k8s:io.cilium.k8s.policy.name=deny-all
  membrane policy delete --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return fmt.Errorf("give either --all or labels, not both")
			case !all && len(args) == 0:
				return fmt.Errorf("no labels: give the labels of the rules to delete, or --all to delete every rule")
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			// No labels (--all): every rule.
			resp, err := c.DeletePolicy(ctx, &models.PolicyDeleteRequest{Labels: args})
			if err != nil {
				return fmt.Errorf("delete policy: %w", err)
			}
			return a.renderPolicyAnswer(resp, "deleted", "deleted")
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "Delete every rule")
	return cmd
}

func (a *app) policyTraceCommand() *cobra.Command {
	var (
		req   models.PolicyTraceRequest
		dport string
	)
	cmd := &cobra.Command{
		Use:   "trace --src-labels LABELS --dst-labels LABELS [--dport PORT[/PROTOCOL]]",
		Short: "Explain the verdict policy gives traffic from one set of labels to another",
		Long: `trace asks the agent's policy engine (POST /v1/policy/trace) what it decides for
traffic from an endpoint with the source labels to one with the destination
labels, on a destination port: the verdict, the reason, and the rules that
decided it. Nothing needs to run with these labels: trace evaluates the
rules, not packets. Labels are source:key=value (key=value matches any
source), comma-separated or repeated; a single cidr:ADDRESS stands for an
address outside the cluster. --dport is PORT/PROTOCOL (TCP, UDP, SCTP,
ICMP, ICMPv6 or a protocol number; TCP if omitted; for ICMP the port is the
ICMP type).`,
		Example: `  membrane policy trace --src-labels k8s:app=frontend --dst-labels k8s:app=web --dport 80/TCP
  membrane policy trace --src-labels k8s:app=a,k8s:io.kubernetes.pod.namespace=default \
      --dst-labels k8s:app=b --dport 8/ICMP -o json
  membrane policy trace --src-labels cidr:192.0.2.1 --dst-labels k8s:app=web --dport 443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(req.SrcLabels) == 0 || len(req.DstLabels) == 0 {
				return fmt.Errorf("give both --src-labels and --dst-labels (e.g. k8s:app=web)")
			}
			if dport != "" {
				var err error
				if req.Dport, req.Protocol, err = parseDPort(dport); err != nil {
					return err
				}
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			resp, err := c.TracePolicy(ctx, &req)
			if err != nil {
				return fmt.Errorf("policy trace: %w", err)
			}
			return a.renderDocument(resp, printTrace)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&req.SrcLabels, "src-labels", nil, "Labels of the source (comma-separated or repeated)")
	fl.StringSliceVar(&req.DstLabels, "dst-labels", nil, "Labels of the destination (comma-separated or repeated)")
	fl.StringVar(&dport, "dport", "", "Destination port and protocol, e.g. 80/TCP, 53/UDP, 8/ICMP (ICMP type 8)")
	return cmd
}

// parseDPort reads PORT[/PROTOCOL].
func parseDPort(s string) (uint16, string, error) {
	portStr, proto, hasProto := strings.Cut(s, "/")
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return 0, "", fmt.Errorf("invalid --dport %q: want PORT[/PROTOCOL] with PORT 0..65535, e.g. 80/TCP", s)
	}
	if !hasProto {
		return uint16(port), "TCP", nil
	}
	if p, ok := maps.ProtocolByName(proto); ok {
		return uint16(port), maps.ProtocolName(p), nil // the canonical spelling
	}
	if p, ok := maps.ParseProtocol(proto); ok {
		return uint16(port), strconv.Itoa(int(p)), nil
	}
	return 0, "", fmt.Errorf("invalid --dport %q: protocol %q is not one of %s or a protocol number", s, proto, strings.Join(maps.ProtocolNames(), ", "))
}

// printTrace prints the verdict, why, the peers, each enforcement point
// and the rules that decided; an answer of another shape as YAML.
func printTrace(w io.Writer, out any) error {
	b, _ := json.Marshal(out)
	var (
		tr     models.PolicyTraceResponse
		fields map[string]json.RawMessage
	)
	present := func(key string) bool { v, ok := fields[key]; return ok && string(v) != "null" }
	if json.Unmarshal(b, &tr) != nil || json.Unmarshal(b, &fields) != nil || tr.Verdict == "" || !present("source") || !present("destination") {
		return printFields(w, out, "verdict", "reason")
	}
	t := newTable(w)
	t.row("Verdict:", tr.Verdict)
	t.row("Reason:", dash(tr.Reason))
	peer := func(p *models.PolicyTracePeer) string {
		if p == nil {
			return "-"
		}
		id := "no identity has these labels"
		if p.Identity != 0 {
			id = "identity " + strconv.FormatUint(uint64(p.Identity), 10)
		}
		if len(p.Labels) == 0 {
			return id
		}
		return id + " [" + strings.Join(p.Labels, ",") + "]"
	}
	stage := func(s *models.PolicyTraceStage) string {
		if s == nil {
			return "- (not an endpoint)"
		}
		if !s.Enforced {
			// Its reason says "not enforced" again.
			return s.Verdict + ", not enforced"
		}
		// "allowed by rule 1/0" reads "allowed, enforced: by rule 1/0".
		out := s.Verdict + ", enforced"
		if reason := strings.TrimPrefix(s.Reason, s.Verdict+" "); reason != "" && reason != s.Verdict {
			out += ": " + reason
		}
		return out
	}
	t.row("Source:", peer(&tr.Source))
	t.row("Destination:", peer(&tr.Destination))
	t.row("Source egress:", stage(tr.Egress))
	t.row("Destination ingress:", stage(tr.Ingress))
	var rules []string
	for _, r := range tr.Rules {
		line := r.Key
		if r.Namespace != "" {
			line += " (namespace " + r.Namespace + ")"
		}
		if r.Description != "" {
			line += ": " + r.Description
		}
		if len(r.Labels) > 0 {
			line += " [" + strings.Join(r.Labels, ",") + "]"
		}
		rules = append(rules, line)
	}
	t.row("Rules:", dash(strings.Join(rules, "\n")))
	if len(tr.Explanation) > 0 {
		t.row("Explanation:", strings.Join(tr.Explanation, "\n"))
	}
	return t.flush()
}

// renderPolicyAnswer prints an import or delete answer
// ({"revision": 4, "rules": 2}) in table mode as "imported 2 rules, policy
// revision 4"; other formats print the document.
func (a *app) renderPolicyAnswer(out any, verb, countKey string) error {
	return a.renderDocument(out, func(w io.Writer, doc any) error { return printPolicyAnswer(w, doc, verb, countKey) })
}

// renderDocument renders an answer of the policy API as the generic JSON
// document it is on the wire (objects as maps, numbers as float64), as
// the policy commands always have: -o json prints its keys sorted, and
// table hands the document to print.
func (a *app) renderDocument(answer any, print func(w io.Writer, doc any) error) error {
	b, err := json.Marshal(answer)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("decoding JSON: %w", err)
	}
	return a.render(doc, func(w io.Writer) error { return print(w, doc) })
}

// printPolicyAnswer is the table form of an import or delete answer; an
// answer of another shape is shown as YAML, no answer as "policy VERB".
func printPolicyAnswer(w io.Writer, out any, verb, countKey string) error {
	m, _ := out.(map[string]any)
	rev, hasRev := m["revision"]
	n, hasCount := m[countKey].(float64)
	var err error
	switch {
	case out == nil:
		_, err = fmt.Fprintf(w, "policy %s\n", verb)
	case hasRev && hasCount:
		_, err = fmt.Fprintf(w, "%s %s, policy revision %s\n", verb, plural(int(n), "rule"), scalarString(rev))
	case hasRev:
		_, err = fmt.Fprintf(w, "policy %s, revision %s\n", verb, scalarString(rev))
	default:
		err = writeYAML(w, out)
	}
	return err
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// printFields prints an answer whose detailed shape this CLI leaves to the
// agent: the named top-level fields first, one per line ("Verdict:
// allowed"), then everything else as YAML.
func printFields(w io.Writer, v any, first ...string) error {
	m, ok := v.(map[string]any)
	if !ok {
		return writeYAML(w, v)
	}
	rest := map[string]any{}
	for k, val := range m {
		if !slices.Contains(first, k) {
			rest[k] = val
		}
	}
	for _, k := range first {
		if val, ok := m[k]; ok {
			if _, err := fmt.Fprintf(w, "%s: %s\n", titleCase(k), scalarString(val)); err != nil {
				return err
			}
		}
	}
	if len(rest) == 0 {
		return nil
	}
	return writeYAML(w, rest)
}

// scalarString renders a decoded JSON value on one line: numbers without
// exponent, strings as is, anything else as JSON.
func scalarString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + strings.ReplaceAll(s[1:], "-", " ")
}

func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	_, err = w.Write(b)
	return err
}
