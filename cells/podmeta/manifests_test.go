package podmeta

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

func startSource(t *testing.T, manifestDir, stateDir string) (*Source, *statedb.DB, statedb.Table[*tables.Pod]) {
	t.Helper()
	var (
		src  *Source
		db   *statedb.DB
		pods statedb.Table[*tables.Pod]
	)
	h := celltest.New(t, stateDir,
		Cell,
		cell.Invoke(func(s *Source, d *statedb.DB, p statedb.Table[*tables.Pod]) { src, db, pods = s, d, p }),
	)
	hive.AddConfigOverride(h.Hive, func(c *Config) { c.PodManifestDir = manifestDir; c.PodManifestInterval = 20 * time.Millisecond })
	h.StartTest()
	return src, db, pods
}

// waitPods polls until the table holds want (key -> app label), bounded.
func waitPods(t *testing.T, db *statedb.DB, pods statedb.Table[*tables.Pod], want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]string{}
		for p := range pods.All(db.ReadTxn()) {
			got[p.Key()] = p.Labels["app"]
		}
		if len(got) == len(want) {
			same := true
			for k, v := range want {
				if got[k] != v {
					same = false
				}
			}
			if same {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods = %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestManifestDirFollowsFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		// A new mtime and size every write, so the watcher sees the change.
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "kind: Pod\nmetadata: {name: web, labels: {app: web}}\n---\nkind: Pod\nmetadata: {name: db, namespace: prod, labels: {app: db}}\n")
	_, db, pods := startSource(t, dir, t.TempDir())
	waitPods(t, db, pods, map[string]string{"default/web": "web", "prod/db": "db"})

	// A changed file replaces its pods; a pod gone from it goes.
	write("a.yaml", "kind: Pod\nmetadata: {name: web, labels: {app: web-v2}}\n")
	waitPods(t, db, pods, map[string]string{"default/web": "web-v2"})

	// A file that does not parse keeps the pods it had.
	write("a.yaml", "kind: Pod\nmetadata: {name: web, labels: {app: [broken\n")
	write("b.json", `{"kind":"Pod","metadata":{"name":"cache","labels":{"app":"cache"}}}`)
	waitPods(t, db, pods, map[string]string{"default/web": "web-v2", "default/cache": "cache"})

	// A removed file takes its pods with it.
	os.Remove(filepath.Join(dir, "b.json"))
	waitPods(t, db, pods, map[string]string{"default/web": "web-v2"})
}

func TestAPIPodsSurviveRestart(t *testing.T) {
	state := t.TempDir()
	src, _, _ := startSource(t, "", state)
	if _, err := src.Upsert(&models.Pod{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}}, SourceAPI); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Upsert(&models.Pod{Namespace: "default", Name: "Bad Name"}, SourceAPI); err == nil {
		t.Fatal("invalid pod name accepted")
	}
	// The first never stopped, as after a kill: a second on what it left
	// on disk (a copy: the first holds its state dir's lock).
	_, db, pods := startSource(t, "", celltest.CopyStateDir(t, state))
	waitPods(t, db, pods, map[string]string{"default/web": "web"})
}
