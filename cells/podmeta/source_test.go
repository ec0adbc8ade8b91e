package podmeta

import (
	"log/slog"
	"maps"
	"testing"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

func newTestSource(t *testing.T, path string) *Source {
	t.Helper()
	db := statedb.New()
	pods, err := tables.NewPodsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := statedir.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return &Source{log: slog.New(slog.DiscardHandler), db: db, pods: pods, dir: dir}
}

// pods.json holds the API's pods as the table has them after each
// change, with the pods encoded by an earlier save reused, and a restart
// gets them back.
func TestSourceSavesAndRestoresAPIPods(t *testing.T) {
	path := t.TempDir()
	s := newTestSource(t, path)
	for _, p := range []models.Pod{
		{Namespace: "a", Name: "one", Labels: map[string]string{"app": "x"}},
		{Namespace: "a", Name: "two", Labels: map[string]string{"app": "y"}},
		{Namespace: "b", Name: "three", Labels: map[string]string{"app": "z"}},
		{Namespace: "a", Name: "two", Labels: map[string]string{"app": "y2"}}, // a change
	} {
		if _, err := s.Upsert(&p, SourceAPI); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Upsert(&models.Pod{Namespace: "m", Name: "manifest"}, "manifest"); err != nil {
		t.Fatal(err)
	}
	if found, err := s.Delete("b/three"); !found || err != nil {
		t.Fatalf("delete: found %v, error %v", found, err)
	}
	want := map[string]map[string]string{"a/one": {"app": "x"}, "a/two": {"app": "y2"}}

	var saved []*tables.Pod
	if _, err := s.dir.ReadJSON(podsFile, &saved); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	for _, p := range saved {
		got[p.Key()] = p.Labels
	}
	if len(got) != len(want) || !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("pods.json holds %v, want %v", got, want)
	}
	if len(s.encoded) != len(want) {
		t.Fatalf("%d cached entries, want %d", len(s.encoded), len(want))
	}

	r := newTestSource(t, path)
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	got = map[string]map[string]string{}
	for p := range r.pods.All(r.db.ReadTxn()) {
		got[p.Key()] = p.Labels
	}
	if !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("restored %v, want %v", got, want)
	}
}
