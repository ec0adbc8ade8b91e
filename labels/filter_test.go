package labels

import (
	"slices"
	"strings"
	"testing"
)

func mustList(t *testing.T, ss ...string) Labels {
	t.Helper()
	ls, err := ParseList(ss, SourceK8s)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// A Deployment's pod as the pod metadata source builds it: the default
// filter keeps what identifies the workload and drops what differs between
// its replicas or rollouts.
func TestDefaultFilterKeepsWorkloadDropsPerPodLabels(t *testing.T) {
	in := mustList(t,
		"k8s:app=web",
		"k8s:tier=frontend",
		"k8s:app.kubernetes.io/name=shop",
		"k8s:io.kubernetes.pod.namespace=prod",
		"k8s:io.cilium.k8s.namespace.labels.team=shop",
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
		"reserved:host",
		"container:role=edge",

		"k8s:pod-template-hash=7d9f8b6c5",
		"k8s:controller-revision-hash=web-5b8c9",
		"k8s:pod-template-generation=3",
		"k8s:statefulset.kubernetes.io/pod-name=web-0",
		"k8s:apps.kubernetes.io/pod-index=0",
		"k8s:batch.kubernetes.io/controller-uid=1a2b",
		"k8s:batch.kubernetes.io/job-name=migrate",
		"k8s:batch.kubernetes.io/job-completion-index=4",
		"k8s:controller-uid=1a2b",
		"k8s:job-name=migrate",
		"k8s:io.kubernetes.pod.name=web-7d9f8b6c5-abcde",
		"k8s:io.kubernetes.container.name=web",
		"k8s:kubernetes.io/hostname=node1",
		"k8s:failure-domain.beta.kubernetes.io/zone=a",
		"k8s:k8s.io/cluster-service=true",
		"k8s:annotation.owner=team-a",
		"k8s:etcd_node=etcd-0",
	)
	sec, ignored := DefaultFilter().Split(in)
	want := []string{
		"container:role=edge",
		"k8s:app=web",
		"k8s:app.kubernetes.io/name=shop",
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
		"k8s:io.cilium.k8s.namespace.labels.team=shop",
		"k8s:io.kubernetes.pod.namespace=prod",
		"k8s:tier=frontend",
		"reserved:host",
	}
	if got := sec.Strings(); !slices.Equal(got, want) {
		t.Errorf("security labels:\n got  %v\n want %v", got, want)
	}
	if len(sec)+len(ignored) != len(in) {
		t.Errorf("split lost labels: %d + %d != %d", len(sec), len(ignored), len(in))
	}
}

// Exact-key exclusions do not catch longer keys that merely start the same.
func TestDefaultFilterExactKeys(t *testing.T) {
	f := DefaultFilter()
	for _, s := range []string{"k8s:job-name-owner=x", "k8s:pod-template-hashes=x", "k8s:controller-uid-ref=y"} {
		l, _ := Parse(s, "")
		if !f.Relevant(l) {
			t.Errorf("%s dropped, want kept (only the exact key is excluded)", s)
		}
	}
}

func TestCustomExclusions(t *testing.T) {
	f, err := NewFilter(`k8s:!version$`, `!team`)
	if err != nil {
		t.Fatal(err)
	}
	if f.AllowList() {
		t.Fatal("exclusions alone must not turn the filter into an allow list")
	}
	got := f.Filter(mustList(t, "k8s:app=web", "k8s:version=v2", "container:version=v2", "k8s:team-name=a", "k8s:io.kubernetes.pod.namespace=ns")).Strings()
	want := []string{"container:version=v2", "k8s:app=web", "k8s:io.kubernetes.pod.namespace=ns"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (k8s:version and team* dropped, container:version kept)", got, want)
	}
}

// One inclusion turns the filter into an allow list; the default inclusions
// (namespace, the namespace's labels, app.kubernetes.io) and reserved
// labels stay.
func TestCustomInclusionIsAllowList(t *testing.T) {
	f, err := NewFilter(`k8s:app$`)
	if err != nil {
		t.Fatal(err)
	}
	if !f.AllowList() {
		t.Fatal("want allow list")
	}
	got := f.Filter(mustList(t,
		"k8s:app=web", "k8s:env=prod", "container:app=x",
		"k8s:io.kubernetes.pod.namespace=ns", "k8s:app.kubernetes.io/part-of=shop",
		"k8s:io.cilium.k8s.namespace.labels.faction=alliance",
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=ns",
		"reserved:world", "k8s:pod-template-hash=abc")).Strings()
	want := []string{"k8s:app=web", "k8s:app.kubernetes.io/part-of=shop",
		"k8s:io.cilium.k8s.namespace.labels.faction=alliance", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=ns",
		"k8s:io.kubernetes.pod.namespace=ns", "reserved:world"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The longest inclusion beats a shorter exclusion, and vice versa.
func TestLongestMatchWins(t *testing.T) {
	f, err := NewFilter(`!example\.com`, `example\.com/keep`)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Filter(mustList(t, "k8s:example.com/keep=1", "k8s:example.com/drop=1")).Strings()
	if want := []string{"k8s:example.com/keep=1"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// On a tie the exclusion wins.
	f, _ = NewFilter(`example\.com/keep`, `!example\.com/keep$`)
	if f.Relevant(Label{Source: SourceK8s, Key: "example.com/keep", Value: "1"}) {
		t.Error("label kept although an exclusion matches as much of it as the inclusion")
	}
}

func TestReservedAlwaysKept(t *testing.T) {
	f, err := NewFilter(`!.*`, `reserved:!.*`)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Filter(mustList(t, "reserved:host", "k8s:app=web")).Strings()
	if want := []string{"reserved:host"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseFilterPattern(t *testing.T) {
	for _, tc := range []struct {
		in, source, expr string
		exclude          bool
	}{
		{`app`, "", "app", false},
		{`k8s:app`, "k8s", "app", false},
		{`any:app`, "", "app", false},
		{`k8s:!pod-template-hash`, "k8s", "pod-template-hash", true},
		{`!k8s:pod-template-hash`, "k8s", "pod-template-hash", true},
		{`!annotation.*`, "", "annotation.*", true},
		{`(?:a|b):c`, "", "(?:a|b):c", false}, // not a source: the ':' belongs to the regex
	} {
		p, err := ParseFilterPattern(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if p.Source != tc.source || p.Expr != tc.expr || p.Exclude != tc.exclude {
			t.Errorf("%q: got source=%q expr=%q exclude=%v", tc.in, p.Source, p.Expr, p.Exclude)
		}
		if q, err := ParseFilterPattern(p.String()); err != nil || q.String() != p.String() {
			t.Errorf("%q: String %q does not round-trip: %v", tc.in, p.String(), err)
		}
	}
	for _, bad := range []string{"", "k8s:", "!", "k8s:!", "!k8s:!x", "k8s:(unclosed"} {
		_, err := ParseFilterPattern(bad)
		if err == nil {
			t.Errorf("%q: want an error", bad)
			continue
		}
		if !strings.Contains(err.Error(), "label filter pattern") {
			t.Errorf("%q: error %q does not say which pattern", bad, err)
		}
	}
	if _, err := NewFilter("k8s:ok", "k8s:(bad"); err == nil {
		t.Error("NewFilter accepted an invalid pattern")
	}
}

func TestNewFilterPatterns(t *testing.T) {
	f, err := NewFilter("", "  ", "k8s:!x")
	if err != nil {
		t.Fatal(err)
	}
	ps := f.Patterns()
	if len(ps) != len(DefaultFilterPatterns)+1 || ps[len(ps)-1] != "k8s:!x" {
		t.Errorf("patterns = %v: want the defaults then k8s:!x, blanks ignored", ps)
	}
}
