// Package podmeta is the embedded source of pod metadata: it fills the
// pods table from the API (PUT /v1/pod/{namespace}/{name}, `membrane pod
// apply -f`) and from Kubernetes Pod manifests in --pod-manifest-dir.
// Endpoints that name a pod take its labels from this table (the endpoint
// manager watches it), so relabelling a pod here moves its endpoints to a
// new identity without touching the pod.
//
// A Kubernetes pod watcher would be another cell writing the same table.
//
// Try it: membrane pod apply -f pods.yaml; membrane statedb pods.
package podmeta

import (
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Config of the pod metadata source.
type Config struct {
	PodManifestDir      string
	PodManifestInterval time.Duration
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("pod-manifest-dir", def.PodManifestDir,
		"Directory of Kubernetes Pod manifests (*.yaml, *.yml, *.json; several per file) whose labels pods get; empty: API only")
	fs.Duration("pod-manifest-interval", def.PodManifestInterval, "How often --pod-manifest-dir is re-read for changes")
}

// Cell provides the pod metadata source.
var Cell = cell.Module(
	"pod-metadata",
	"Pod labels from the API and a manifest directory",

	cell.Config(Config{PodManifestInterval: time.Second}),
	cell.Provide(newSource, (*Source).routes),
)

type params struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	Jobs      job.Group
	DB        *statedb.DB
	Pods      statedb.RWTable[*tables.Pod]
	StateDir  statedir.Dir
	Config    Config
}

func newSource(p params) (*Source, error) {
	s := &Source{log: p.Log, db: p.DB, pods: p.Pods, dir: p.StateDir}
	wtxn := p.DB.WriteTxn(p.Pods)
	done := p.Pods.RegisterInitializer(wtxn, "pod-metadata")
	wtxn.Commit()
	p.Lifecycle.Append(cell.Hook{OnStart: func(cell.HookContext) error {
		err := s.restore()
		wtxn := p.DB.WriteTxn(p.Pods)
		done(wtxn)
		wtxn.Commit()
		return err
	}})
	if p.Config.PodManifestDir != "" {
		w := &manifestWatcher{src: s, dir: p.Config.PodManifestDir, interval: p.Config.PodManifestInterval,
			seen: map[string]fileState{}, settling: map[string]fileState{}}
		p.Jobs.Add(job.Timer("pod-manifests", w.scan, p.Config.PodManifestInterval))
	}
	return s, nil
}
