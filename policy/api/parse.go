package api

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Kinds of Kubernetes objects that carry rules.
const (
	KindCNP  = "CiliumNetworkPolicy"
	KindCCNP = "CiliumClusterwideNetworkPolicy"
	// KindNP is Kubernetes' own NetworkPolicy (apiVersion
	// networking.k8s.io/v1), translated into a rule (netpol.go).
	KindNP = "NetworkPolicy"

	// APIVersion is the only apiVersion of CNP/CCNP objects.
	APIVersion = "cilium.io/v2"

	// DefaultNamespace is a CiliumNetworkPolicy's namespace when its
	// metadata names none (as kubectl apply would place it).
	DefaultNamespace = "default"
)

// ParsedRule is one rule of a policy document with what the document says
// about it.
type ParsedRule struct {
	// Rule is the validated rule in canonical form (see Parse). Its Labels
	// include those derived from a CNP/CCNP/NetworkPolicy's metadata.
	Rule Rule
	// Namespace is a CiliumNetworkPolicy's (or NetworkPolicy's)
	// namespace: the rule applies only to endpoints of that namespace, and
	// its peer selectors are narrowed to it unless they name the namespace
	// or a namespace label (as Cilium translates a CNP; a NetworkPolicy's
	// translation names the namespace itself). Empty for
	// CiliumClusterwideNetworkPolicy rules and plain rules.
	Namespace string
	// Labels are Rule.Labels as sorted, unique "source:key=value" strings.
	Labels []string
	// Object is the CNP, CCNP or NetworkPolicy the rule came from; nil
	// for a plain rule.
	Object *ObjectRef
}

// Clusterwide reports whether the rule comes from a
// CiliumClusterwideNetworkPolicy: its peer selectors then select only
// endpoints that have a namespace (as Cilium translates a CCNP).
func (pr ParsedRule) Clusterwide() bool {
	return pr.Object != nil && pr.Object.Kind == KindCCNP
}

// ObjectRef names a CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy
// or NetworkPolicy.
type ObjectRef struct {
	Kind      string // KindCNP, KindCCNP or KindNP
	Namespace string // empty for a CCNP
	Name      string
}

func (o ObjectRef) String() string {
	if o.Namespace == "" {
		return fmt.Sprintf("%s %q", o.Kind, o.Name)
	}
	return fmt.Sprintf("%s %q", o.Kind, o.Namespace+"/"+o.Name)
}

// Owns reports whether a rule with these labels ("source:key=value") was
// imported from the object, by the labels derived from its metadata. A
// re-imported object replaces the rules it owns, as kubectl apply would.
func (o ObjectRef) Owns(ruleLabels []string) bool {
	k8s := func(key, value string) string {
		return RuleLabel{Source: LabelSourceK8s, Key: key, Value: value}.String()
	}
	if !slices.Contains(ruleLabels, k8s(PolicyLabelDerivedFrom, o.Kind)) || !slices.Contains(ruleLabels, k8s(PolicyLabelName, o.Name)) {
		return false
	}
	if o.Namespace != "" {
		return slices.Contains(ruleLabels, k8s(PolicyLabelNamespace, o.Namespace))
	}
	return !slices.ContainsFunc(ruleLabels, func(l string) bool {
		return strings.HasPrefix(l, LabelSourceK8s+":"+PolicyLabelNamespace+"=")
	})
}

// derivedLabels are the labels Cilium gives every rule of the object.
func (o ObjectRef) derivedLabels(uid string) []RuleLabel {
	ls := []RuleLabel{
		{Source: LabelSourceK8s, Key: PolicyLabelDerivedFrom, Value: o.Kind},
		{Source: LabelSourceK8s, Key: PolicyLabelName, Value: o.Name},
	}
	if o.Namespace != "" {
		ls = append(ls, RuleLabel{Source: LabelSourceK8s, Key: PolicyLabelNamespace, Value: o.Namespace})
	}
	if uid != "" {
		ls = append(ls, RuleLabel{Source: LabelSourceK8s, Key: PolicyLabelUID, Value: uid})
	}
	return ls
}

// Parse reads a policy document, JSON or YAML, in any of the forms Cilium
// users have:
//
//   - a rule, or a list of rules (what `cilium policy import` takes);
//   - a CiliumNetworkPolicy (apiVersion cilium.io/v2) with a rule in spec
//     and/or a list in specs; its rules get the object's namespace
//     (default "default") and the labels Cilium derives from it
//     (k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy,
//     k8s:io.cilium.k8s.policy.name=NAME,
//     k8s:io.cilium.k8s.policy.namespace=NS);
//   - a CiliumClusterwideNetworkPolicy, the same without a namespace;
//   - a Kubernetes NetworkPolicy (apiVersion networking.k8s.io/v1),
//     translated into one rule of its namespace with the upstream
//     semantics and derived-from=NetworkPolicy (netpol.go);
//   - a list of such objects: kind List (or CiliumNetworkPolicyList, ...),
//     a JSON list, or a YAML stream of documents separated by "---".
//
// Decoding is strict: an unknown field, a value of the wrong type or a
// duplicate key is an error naming the field. Every rule is then checked
// with Validate. On any problem Parse returns no rules and an *Error
// listing the problems, each locating the rule ("rule 2",
// `CiliumNetworkPolicy "prod/web"`) and the field
// ("specs[1].ingress[0].toPorts[0].rules"); fields that Cilium has and
// Membrane does not enforce wrap ErrUnsupported.
//
// The rules come back in document order and in canonical form:
// protocols upper-case (unset is ANY), port names lower-case, CIDRs as
// masked prefixes (a bare address becomes a /32 or /128), ICMP families
// and type names spelled as in ICMPv4Types/ICMPv6Types, rule labels with a
// source (unspec when none was given), sorted and unique.
func Parse(data []byte) ([]ParsedRule, error) {
	p := &parser{ps: &problems{}, seen: map[ObjectRef]bool{}}
	var docs [][]byte
	for _, d := range splitDocuments(data) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	for i, doc := range docs {
		p.doc = ""
		if len(docs) > 1 {
			p.doc = fmt.Sprintf("document %d", i+1)
		}
		v, err := readDocument(doc)
		if err != nil {
			p.ps.add(p.doc, "", err)
			continue
		}
		p.document(v, p.doc)
	}
	if err := p.ps.err(); err != nil {
		return nil, err
	}
	if len(p.rules) == 0 {
		return nil, &Error{Problems: []Problem{{Err: errors.New("the document holds no rules")}}}
	}
	return p.rules, nil
}

type parser struct {
	doc   string // "document N" when the input is a stream, else ""
	ps    *problems
	rules []ParsedRule
	seen  map[ObjectRef]bool
}

// docSep is a YAML document separator line.
var docSep = regexp.MustCompile(`(?m)^---[ \t]*(?:#.*)?\r?$`)

func splitDocuments(data []byte) [][]byte {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	var out [][]byte
	for _, d := range docSep.Split(string(data), -1) {
		out = append(out, []byte(d))
	}
	return out
}

// stripComments drops YAML comment lines, to tell an empty document.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

// readDocument reads one document into generic values. JSON is read as
// JSON (exact error offsets); anything else, or JSON-looking text that is
// only valid as YAML flow style, as YAML.
func readDocument(doc []byte) (any, error) {
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		v, err := readJSON(trimmed)
		if err == nil {
			return v, nil
		}
		if j, yerr := yaml.YAMLToJSONStrict(doc); yerr == nil {
			if v, yerr := readJSON(j); yerr == nil {
				return v, nil
			}
		}
		return nil, err
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	return readJSON(j)
}

// isObject tells a Kubernetes object from a plain rule.
func isObject(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	_, kind := m["kind"]
	_, apiVersion := m["apiVersion"]
	return kind || apiVersion
}

func atJoin(at, what string) string {
	if at == "" {
		return what
	}
	return at + ": " + what
}

// document handles one document's value.
func (p *parser) document(v any, at string) {
	switch v := v.(type) {
	case nil:
	case []any:
		n := 0
		for i, item := range v {
			if isObject(item) {
				p.object(item.(map[string]any), atJoin(at, fmt.Sprintf("item %d", i+1)), "")
				continue
			}
			n++
			p.rule(item, atJoin(at, fmt.Sprintf("rule %d", n)), "", nil, "")
		}
	case map[string]any:
		if isObject(v) {
			p.object(v, at, "")
			return
		}
		p.rule(v, atJoin(at, "rule 1"), "", nil, "")
	default:
		p.ps.addf(at, "", "a policy document is a rule, a list of rules or a policy object (%s, %s, %s), not %s", KindCNP, KindCCNP, KindNP, describe(v))
	}
}

// object handles a Kubernetes object; loc locates it until its name is
// known; defaultKind is the kind of items of a typed list, which may omit it.
func (p *parser) object(m map[string]any, loc, defaultKind string) {
	kind, _ := m["kind"].(string)
	if _, ok := m["kind"]; !ok {
		kind = defaultKind
	}
	switch kind {
	case KindCNP, KindCCNP:
		p.policyObject(m, kind, loc)
	case "List", KindCNP + "List", KindCCNP + "List", KindNP + "List":
		p.checkKeys(m, loc, "", "apiVersion", "kind", "metadata", "items")
		items, ok := m["items"].([]any)
		if !ok && m["items"] != nil {
			p.ps.addf(loc, "items", "must be a list, not %s", describe(m["items"]))
			return
		}
		itemKind := strings.TrimSuffix(kind, "List")
		for i, item := range items {
			iloc := atJoin(loc, fmt.Sprintf("items[%d]", i))
			im, ok := item.(map[string]any)
			if !ok {
				p.ps.addf(iloc, "", "must be a %s object, not %s", KindCNP, describe(item))
				continue
			}
			p.object(im, iloc, itemKind)
		}
	case KindNP:
		p.networkPolicy(m, loc)
	case "":
		p.ps.addf(loc, "kind", "required: %s, %s, %s or List", KindCNP, KindCCNP, KindNP)
	default:
		p.ps.addf(loc, "kind", "%q is not a policy: want %s, %s, %s or a List of them", kind, KindCNP, KindCCNP, KindNP)
	}
}

// objectMetaFields are the fields of Kubernetes' ObjectMeta: what
// `kubectl get -o yaml` writes may come back unchanged.
var objectMetaFields = []string{
	"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
	"creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
	"annotations", "ownerReferences", "finalizers", "managedFields",
}

var (
	dnsSubdomainRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dnsLabelRe     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

func (p *parser) policyObject(m map[string]any, kind, loc string) {
	// status is written by Kubernetes, never read.
	p.checkKeys(m, loc, "", "apiVersion", "kind", "metadata", "spec", "specs", "status")
	if av, ok := m["apiVersion"]; ok && av != APIVersion {
		p.ps.addf(loc, "apiVersion", "%s is not supported for %s (want %s)", describe(av), kind, APIVersion)
	}
	obj, uid, at, ok := p.objectMeta(m, kind, loc)
	if !ok {
		return
	}

	derived := obj.derivedLabels(uid)
	spec, specs := m["spec"], m["specs"]
	if spec == nil && specs == nil {
		p.ps.addf(at, "spec", "a %s needs spec (a rule) or specs (a list of rules)", kind)
		return
	}
	ns2 := ""
	if kind == KindCNP {
		ns2 = obj.Namespace
	}
	if spec != nil {
		p.rule(spec, at, "spec", &obj, ns2, derived...)
	}
	switch l := specs.(type) {
	case nil:
	case []any:
		if len(l) == 0 && spec == nil {
			p.ps.addf(at, "specs", "empty: a %s needs at least one rule", kind)
		}
		for i, r := range l {
			p.rule(r, at, indexPath("specs", i), &obj, ns2, derived...)
		}
	default:
		p.ps.addf(at, "specs", "must be a list of rules, not %s", describe(specs))
	}
}

// objectMeta reads an object's metadata: its reference (a namespaced
// kind without a namespace gets DefaultNamespace), its uid, and where
// messages about it point from now on. ok is false, and the problem
// recorded, when the object cannot be named or appeared before.
func (p *parser) objectMeta(m map[string]any, kind, loc string) (obj ObjectRef, uid, at string, ok bool) {
	obj = ObjectRef{Kind: kind}
	meta, isMap := m["metadata"].(map[string]any)
	if !isMap {
		p.ps.addf(atJoin(loc, kind), "metadata", "required, with a name")
		return obj, "", "", false
	}
	p.checkKeys(meta, loc, "metadata", objectMetaFields...)
	obj.Name, _ = meta["name"].(string)
	ns, nsGiven := meta["namespace"]
	obj.Namespace, _ = ns.(string)
	uid, _ = meta["uid"].(string)
	switch {
	case obj.Name == "":
		p.ps.addf(atJoin(loc, kind), "metadata.name", "required")
		return obj, "", "", false
	case len(obj.Name) > 253 || !dnsSubdomainRe.MatchString(obj.Name):
		p.ps.addf(atJoin(loc, kind), "metadata.name", "%q is not a valid object name (lowercase letters, digits, '-' and '.', at most 253)", obj.Name)
		return obj, "", "", false
	}
	switch {
	case kind == KindCCNP && nsGiven && ns != nil && ns != "":
		p.ps.addf(atJoin(loc, obj.String()), "metadata.namespace", "a %s is cluster-wide and has no namespace", KindCCNP)
		return obj, "", "", false
	case kind == KindCCNP:
	case obj.Namespace == "":
		if nsGiven && ns != nil && ns != "" {
			p.ps.addf(atJoin(loc, kind), "metadata.namespace", "must be a string, not %s", describe(ns))
			return obj, "", "", false
		}
		obj.Namespace = DefaultNamespace
	case len(obj.Namespace) > 63 || !dnsLabelRe.MatchString(obj.Namespace):
		p.ps.addf(atJoin(loc, kind), "metadata.namespace", "%q is not a valid namespace (lowercase letters, digits and '-', at most 63)", obj.Namespace)
		return obj, "", "", false
	}

	// Once named, the object's name locates it better than its position.
	at = atJoin(p.doc, obj.String())
	if p.seen[obj] {
		p.ps.addf(at, "", "appears more than once in the document")
		return obj, "", "", false
	}
	p.seen[obj] = true
	return obj, uid, at, true
}

// checkKeys reports keys of m outside known.
func (p *parser) checkKeys(m map[string]any, at, path string, known ...string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			p.ps.add(at, joinPath(path, k), unknownField(k, known))
		}
	}
}

var ruleType = reflect.TypeFor[Rule]()

// rule decodes, validates and records one rule; path is where it sits in
// its object ("" for a plain rule).
func (p *parser) rule(v any, at, path string, obj *ObjectRef, namespace string, derived ...RuleLabel) {
	count := func() int { return len(p.ps.list) + p.ps.omitted }
	before := count()
	if v == nil {
		p.ps.addf(at, path, "a rule cannot be null")
		return
	}
	c := conformer{ps: p.ps, at: at}
	v = c.conform(v, ruleType, path)
	if c.mistyped {
		return
	}
	var r Rule
	if err := decodeInto(v, &r); err != nil {
		p.ps.add(at, path, err)
		return
	}
	validator{ps: p.ps, at: at}.rule(&r, path)
	for i, l := range r.Labels {
		for _, d := range derived {
			if l.Source == d.Source && l.Key == d.Key && l.Value != d.Value {
				p.ps.addf(at, indexPath(joinPath(path, "labels"), i), "label %s is derived from the %s's metadata (%s); remove it", l.Key, obj.Kind, d)
			}
		}
	}
	if count() > before {
		return
	}
	r.normalize()
	r.Labels = append(r.Labels, derived...)
	r.Labels = uniqueLabels(r.Labels)
	pr := ParsedRule{Rule: r, Namespace: namespace, Object: obj}
	for _, l := range r.Labels {
		pr.Labels = append(pr.Labels, l.String())
	}
	p.rules = append(p.rules, pr)
}

// uniqueLabels sorts labels by their canonical form and drops duplicates.
func uniqueLabels(ls LabelArray) LabelArray {
	if len(ls) == 0 {
		return nil
	}
	out := slices.Clone(ls)
	slices.SortFunc(out, func(a, b RuleLabel) int { return strings.Compare(a.String(), b.String()) })
	return slices.CompactFunc(out, func(a, b RuleLabel) bool { return a.String() == b.String() })
}
