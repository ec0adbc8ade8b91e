package podmeta

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/membrane-net/membrane/api/podmanifest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// manifestWatcher keeps the pods table in step with a directory of Pod
// manifests: rows it writes carry the source "manifest:FILE"; a changed
// file replaces its rows, a removed file deletes them. A file that does not
// parse is reported and its previous rows are kept, so a typo never strips
// running pods of their labels.
type manifestWatcher struct {
	src      *Source
	dir      string
	seen     map[string]fileState
	settling map[string]fileState // changed, waiting to be seen unchanged once more
	interval time.Duration        // between scans
}

type fileState struct {
	mtime time.Time
	size  int64
}

func (w *manifestWatcher) scan(ctx context.Context) error {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("--pod-manifest-dir: %w", err)
	}
	present := map[string]bool{}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !hasManifestExt(name) {
			continue
		}
		present[name] = true
		info, err := e.Info()
		if err != nil {
			continue
		}
		st := fileState{mtime: info.ModTime(), size: info.Size()}
		if old, ok := w.seen[name]; ok && old == st {
			continue
		}
		// Load a changed file only once it has stayed the same for a scan
		// (or was last written longer ago than that): a file written in
		// place is briefly empty or half-written, and loading that would
		// strip its pods of their labels.
		if w.settling[name] != st && time.Since(st.mtime) < w.interval {
			w.settling[name] = st
			continue
		}
		delete(w.settling, name)
		if err := w.load(name); err != nil {
			errs = append(errs, err)
			continue
		}
		w.seen[name] = st
	}
	for name := range w.seen {
		if !present[name] {
			w.replace(name, nil)
			delete(w.seen, name)
		}
	}
	for name := range w.settling {
		if !present[name] {
			delete(w.settling, name)
		}
	}
	return errors.Join(errs...)
}

func hasManifestExt(name string) bool {
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func (w *manifestWatcher) load(name string) error {
	data, err := os.ReadFile(filepath.Join(w.dir, name))
	if err != nil {
		return err
	}
	pods, err := podmanifest.Parse(filepath.Join(w.dir, name), data, "default")
	if err != nil {
		return fmt.Errorf("pod manifest: %w", err)
	}
	var rows []*tables.Pod
	for _, p := range pods {
		rows = append(rows, &tables.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID,
			Labels: p.Labels, Annotations: p.Annotations, Source: "manifest:" + name})
	}
	w.replace(name, rows)
	w.src.log.Info("pod manifest loaded", "file", name, "pods", len(rows))
	return nil
}

// replace swaps the rows that came from one file for rows, in one
// transaction, so endpoints never see the pod briefly missing.
func (w *manifestWatcher) replace(name string, rows []*tables.Pod) {
	s := w.src
	source := "manifest:" + name
	wtxn := s.db.WriteTxn(s.pods)
	keep := map[string]bool{}
	for _, r := range rows {
		keep[r.Key()] = true
		if old, _, ok := s.pods.Get(wtxn, tables.PodKeyIndex.Query(r.Key())); ok && samePod(old, r) {
			continue
		}
		s.pods.Insert(wtxn, r)
	}
	for p := range s.pods.All(wtxn) {
		if p.Source == source && !keep[p.Key()] {
			s.pods.Delete(wtxn, p)
		}
	}
	wtxn.Commit()
}

func samePod(a, b *tables.Pod) bool {
	return a.UID == b.UID && a.Source == b.Source && maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
}
