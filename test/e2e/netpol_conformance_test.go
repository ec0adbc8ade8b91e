package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// TestNetworkPolicyConformance runs the cases of the upstream Kubernetes
// e2e NetworkPolicy suite (kubernetes/kubernetes
// test/e2e/network/netpol/network_policy.go) in the same shape: three
// namespaces x, y, z with pods a, b, c each (9 real netns pods made
// through membrane-cni, pod label pod=NAME, namespace labels ns=NS and
// kubernetes.io/metadata.name=NS carried as io.cilium.k8s.namespace.labels.*
// pod labels as a Kubernetes source gives them), NetworkPolicy YAML
// imported with `membrane policy import`, and after each step a probe
// between all 9x9 pairs on one port and protocol, compared with the
// step's truth table (a pod to itself is not probed: upstream ignores
// loopback too). Upstream creates only the pods a case names; here all
// nine exist in every case, which only adds pairs whose verdict the
// policies decide the same way.
//
// Covered (upstream test names, "should ..."): every case of the
// "NetworkPolicy between server and client" context except those below,
// and the three cases of "... using UDP".
//
// Not covered, and why:
//   - "allow ingress access on one named port", "allow ingress access from
//     namespace on one named port", "allow egress access on one named
//     port": named ports are refused (Membrane does not know container
//     port names); the test checks that importing such a policy fails with
//     an error naming the field.
//   - "allow egress access to server in CIDR block", "enforce except
//     clause while egress access to server in CIDR block", "ensure an IP
//     overlapping both IPBlock.CIDR and IPBlock.Except is allowed": these
//     point ipBlock at pod IPs; as in Cilium, an ipBlock matches addresses
//     that are not pods (a pod is matched by its identity, never by its
//     address). The same three shapes run against an address outside the
//     cluster instead (the "ipBlock ..." cases).
//   - the three cases of "... using SCTP": the probes need SCTP sockets,
//     which this test's kernel may not have; the SCTP translation is
//     covered by unit tests, and the two TCP cases about SCTP policies
//     (an SCTP allow is not a TCP allow; it still isolates) run here.
//
// Between cases every policy is deleted and relabelled pods get their
// labels back, so one set of pods serves all cases.
func TestNetworkPolicyConformance(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	a := startAgent(t, agentOpts{Extra: []string{"--allow-localhost", "policy"}})
	e := &netpolEnv{policyEnv: &policyEnv{t: t, a: a, n: newNetwork(t, a, "", nil)}, dir: t.TempDir(),
		pods: map[string]*pod{}, labels: map[string]map[string]string{}}
	for _, ns := range npNamespaces {
		for _, name := range npPodNames {
			e.labels[ns+"/"+name] = e.baseLabels(ns, name)
			a.putPod(ns, name, e.labels[ns+"/"+name])
			p := newPod(t, ns, name)
			if err := e.n.add(p); err != nil {
				t.Fatalf("ADD %s/%s: %v", ns, name, err)
			}
			e.pods[ns+"/"+name] = p
		}
	}
	var wg sync.WaitGroup
	for _, key := range npPodKeys() {
		p := e.pods[key]
		e.waitRelabelled(p, "io.cilium.k8s.namespace.labels.ns", p.Namespace)
		wg.Go(func() { startServer(t, p, "80", "81") })
	}
	wg.Wait()
	outsideSubnet++
	e.out = newOutside(t, outsideSubnet)
	startServer(t, e.out.asPod(), "80")

	for _, c := range netpolCases(e) {
		t.Run(c.name, func(t *testing.T) {
			top := e.t
			e.t = t
			defer func() { e.t = top }()
			for i, s := range c.steps {
				e.step(i, s)
			}
		})
		e.reset()
	}

	t.Run("named ports are refused", func(t *testing.T) {
		out, err := e.cli("policy", "import", "-f", e.write("named", npYAML("x", "allow-all", `{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}]}`)))
		if err == nil || !strings.Contains(out, `spec.ingress[0].ports[0].port: named port "serve-81-tcp" is not supported`) {
			t.Errorf("import of a named port: %v\n%s", err, out)
		}
	})
}

var (
	npNamespaces = []string{"x", "y", "z"}
	npPodNames   = []string{"a", "b", "c"}
)

// npPodKeys are the pods as "ns/name", in table order.
func npPodKeys() []string {
	var keys []string
	for _, ns := range npNamespaces {
		for _, name := range npPodNames {
			keys = append(keys, ns+"/"+name)
		}
	}
	return keys
}

type netpolEnv struct {
	*policyEnv
	dir    string
	pods   map[string]*pod              // by "ns/name"
	labels map[string]map[string]string // current labels, by "ns/name"
	dirty  []string                     // pods relabelled by the current case
	files  int
}

func (e *netpolEnv) baseLabels(ns, name string) map[string]string {
	return map[string]string{
		"pod":                               name,
		"io.cilium.k8s.namespace.labels.ns": ns,
		"io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": ns,
	}
}

// npStep is one step of a case: policies to import or delete, labels to
// add, then a probe of every pair on port/proto against the truth table.
type npStep struct {
	apply []string // NetworkPolicy documents (npYAML)
	// delete names NetworkPolicies ("ns/name") to delete with
	// `membrane policy delete` by their derived labels.
	delete []string
	// podLabels adds labels to pods ("ns/name"); nsLabels adds labels
	// to every pod of a namespace, as a relabelled namespace does.
	podLabels map[string]map[string]string
	nsLabels  map[string]map[string]string
	port      string
	proto     string // "tcp" (default) or "udp"
	want      func(r *reach)
	// outside are connections to the address outside the cluster,
	// checked after the table.
	outside func() []fact
}

type npCase struct {
	name  string
	steps []npStep
}

func (e *netpolEnv) step(i int, s npStep) {
	t := e.t
	for key, ls := range s.podLabels {
		e.relabel(key, ls)
	}
	for ns, ls := range s.nsLabels {
		for _, name := range npPodNames {
			nsls := map[string]string{}
			for k, v := range ls {
				nsls["io.cilium.k8s.namespace.labels."+k] = v
			}
			e.relabel(ns+"/"+name, nsls)
		}
	}
	for j, doc := range s.apply {
		if out, err := e.cli("policy", "import", "-f", e.write(fmt.Sprintf("step%d-%d", i, j), doc)); err != nil {
			t.Fatalf("step %d: policy import: %v\n%s\n%s", i, err, out, doc)
		}
	}
	for _, obj := range s.delete {
		ns, name, _ := strings.Cut(obj, "/")
		if out, err := e.cli("policy", "delete", "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
			"k8s:io.cilium.k8s.policy.namespace="+ns, "k8s:io.cilium.k8s.policy.name="+name); err != nil {
			t.Fatalf("step %d: policy delete %s: %v\n%s", i, obj, err, out)
		}
	}
	e.waitPolicy()
	r := newReach()
	if s.want != nil {
		s.want(r)
	}
	proto := s.proto
	if proto == "" {
		proto = "tcp"
	}
	e.validate(fmt.Sprintf("step %d, %s port %s", i, strings.ToUpper(proto), s.port), proto, s.port, r)
	if s.outside != nil {
		e.expect(s.outside()...)
	}
}

// relabel adds labels to a pod and waits for its new identity.
func (e *netpolEnv) relabel(key string, add map[string]string) {
	ls := e.labels[key]
	var k, v string
	for k, v = range add {
		ls[k] = v
	}
	p := e.pods[key]
	e.a.putPod(p.Namespace, p.Name, ls)
	e.waitRelabelled(p, k, v)
	e.dirty = append(e.dirty, key)
}

// reset deletes every policy and gives relabelled pods their labels back.
func (e *netpolEnv) reset() {
	e.deleteAllPolicy()
	for _, key := range e.dirty {
		p := e.pods[key]
		e.labels[key] = e.baseLabels(p.Namespace, p.Name)
		e.a.putPod(p.Namespace, p.Name, e.labels[key])
	}
	for _, key := range e.dirty {
		p := e.pods[key]
		e2eutil.Eventually(e.t, 30*time.Second, p.Name+" to get its labels back", func() error {
			ep := e.a.endpoint(p.Attachment())
			if ep == nil || ep.Identity == nil || len(ep.Identity.Labels) == 0 {
				return fmt.Errorf("no identity")
			}
			for _, l := range ep.Identity.Labels {
				if strings.HasPrefix(l, "k8s:pod2=") || strings.HasPrefix(l, "k8s:target=") || strings.HasPrefix(l, "k8s:io.cilium.k8s.namespace.labels.ns2=") {
					return fmt.Errorf("still has %s", l)
				}
			}
			return nil
		})
	}
	e.dirty = nil
	e.waitPolicy()
}

// waitPolicy waits until every endpoint enforces the current revision.
func (e *netpolEnv) waitPolicy() {
	e.t.Helper()
	resp, err := e.a.Client.GetPolicy(ctxT(e.t))
	if err != nil {
		e.t.Fatalf("get policy: %v", err)
	}
	e.waitRevision(uint64(resp.Revision))
}

func (e *netpolEnv) cli(args ...string) (string, error) {
	out, err := exec.Command(bins.CLI, append([]string{"--socket", e.a.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

func (e *netpolEnv) write(name, doc string) string {
	e.files++
	path := filepath.Join(e.dir, fmt.Sprintf("%03d-%s.yaml", e.files, name))
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// npYAML is a NetworkPolicy in namespace ns; spec is YAML flow style.
func npYAML(ns, name, spec string) string {
	spec = strings.Join(strings.Fields(spec), " ")
	return fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: %q\n  namespace: %q\nspec: %s\n", name, ns, spec)
}

// reach is a truth table: whether "ns/name" may reach "ns/name".
type reach struct{ m map[[2]string]bool }

// newReach allows everything, as upstream's NewReachability(pods, true).
func newReach() *reach {
	r := &reach{m: map[[2]string]bool{}}
	for _, from := range npPodKeys() {
		for _, to := range npPodKeys() {
			r.m[[2]string{from, to}] = true
		}
	}
	return r
}

// set sets the pairs whose source matches from and destination matches
// to: "" is any pod, "x" any pod of namespace x, "x/a" one pod (as
// upstream's ExpectPeer with Peer{Namespace, Pod}).
func (r *reach) set(from, to string, v bool) {
	match := func(pat, key string) bool {
		ns, _, _ := strings.Cut(key, "/")
		return pat == "" || pat == key || pat == ns
	}
	for k := range r.m {
		if match(from, k[0]) && match(to, k[1]) {
			r.m[k] = v
		}
	}
}

// validate probes every pair (in parallel, one prober per source) and
// reports the table when a verdict differs. A pair that differs is probed
// twice more before it counts: an allowed connection on a loaded machine
// may miss a one-second deadline, a dropped one never answers.
func (e *netpolEnv) validate(what, proto, port string, want *reach) {
	e.t.Helper()
	got := map[[2]string]bool{}
	for try := 0; try < 3; try++ {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, from := range npPodKeys() {
			var addrs []string
			var keys []string
			for _, to := range npPodKeys() {
				if to == from {
					continue
				}
				if v, done := got[[2]string{from, to}]; done && v == want.m[[2]string{from, to}] {
					continue
				}
				addrs = append(addrs, net.JoinHostPort(e.pods[to].IP().String(), port))
				keys = append(keys, to)
			}
			if len(addrs) == 0 {
				continue
			}
			wg.Go(func() {
				res, err := e.pods[from].netns().Probe(proto, addrs)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					e.t.Errorf("%s: %v", what, err)
					return
				}
				for i, to := range keys {
					got[[2]string{from, to}] = res[addrs[i]]
				}
			})
		}
		wg.Wait()
		if e.t.Failed() {
			return
		}
		if mismatches(got, want) == 0 {
			return
		}
	}
	e.t.Errorf("%s: %d pairs differ from the truth table (rows: from, columns: to; . reached, X dropped, ! wrong):\n%s",
		what, mismatches(got, want), table(got, want))
}

func mismatches(got map[[2]string]bool, want *reach) int {
	n := 0
	for k, v := range got {
		if v != want.m[k] {
			n++
		}
	}
	return n
}

func table(got map[[2]string]bool, want *reach) string {
	var b strings.Builder
	b.WriteString("     ")
	for _, to := range npPodKeys() {
		fmt.Fprintf(&b, " %s", to)
	}
	b.WriteString("\n")
	for _, from := range npPodKeys() {
		fmt.Fprintf(&b, "%s  ", from)
		for _, to := range npPodKeys() {
			c := "-"
			if v, ok := got[[2]string{from, to}]; ok {
				switch {
				case v != want.m[[2]string{from, to}]:
					c = "!"
				case v:
					c = "."
				default:
					c = "X"
				}
			}
			fmt.Fprintf(&b, "  %s ", c)
		}
		b.WriteString("\n")
	}
	return b.String()
}
