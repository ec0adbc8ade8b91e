package identity

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/k8s/client"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell is the identity allocator: it gives every endpoint whose labels are
// resolved the numeric identity of its security labels, publishes the
// identities in the identities table, releases the ones no endpoint uses
// and serves GET /v1/identity. It provides the *labels.Filter it uses, so
// other cells can show an endpoint's security labels.
var Cell = cell.Module(
	"identity",
	"Security identities derived from endpoint labels",

	cell.Config(DefaultConfig),
	cell.Provide(
		newFilter,
		newRoutes,
	),
	cell.Invoke(registerController),
)

// Config of the identity allocator.
type Config struct {
	// IdentityLabelFilter are label patterns added to
	// labels.DefaultFilterPatterns (see labels.Filter).
	IdentityLabelFilter []string
	// IdentityGCGrace is how long a cluster identity (Kubernetes mode)
	// stays unused before the garbage collector deletes it.
	IdentityGCGrace time.Duration
}

// DefaultConfig uses the default filter alone.
var DefaultConfig = Config{IdentityLabelFilter: []string{}, IdentityGCGrace: 5 * time.Minute}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.StringSlice("identity-label-filter", def.IdentityLabelFilter,
		"Label patterns added to the default security-label filter: [source:][!]regex on the key, anchored at its start; "+
			"'!' excludes (k8s:!version$); one inclusion (k8s:app) keeps only matching labels plus the namespace, "+
			"the namespace's labels, app.kubernetes.io and reserved labels. Comma-separated or repeated")
	fs.Duration("identity-gc-grace", def.IdentityGCGrace,
		"Kubernetes mode: how long a CiliumIdentity no endpoint of the cluster uses is kept before it is deleted "+
			"(one agent at a time, holding the Lease membrane-system/membrane-identity-gc)")
}

func newFilter(cfg Config) (*labels.Filter, error) {
	f, err := labels.NewFilter(cfg.IdentityLabelFilter...)
	if err != nil {
		return nil, fmt.Errorf("--identity-label-filter: %w", err)
	}
	return f, nil
}

type controllerParams struct {
	cell.In

	Log        *slog.Logger
	Lifecycle  cell.Lifecycle
	Jobs       job.Group
	DB         *statedb.DB
	Endpoints  statedb.RWTable[*tables.Endpoint]
	Identities statedb.RWTable[*tables.Identity]
	Filter     *labels.Filter
	StateDir   statedir.Dir
	Range      clusterRange `optional:"true"`
	Config     Config

	// Kubernetes mode (cs.IsEnabled()): identities are CiliumIdentities.
	Clientset *client.Clientset `optional:"true"`
	K8sStatus *k8scell.Status   `optional:"true"`
	// RemoteEndpoints: the other nodes' CiliumEndpoints, whose identities
	// are in use; without it the garbage collector watches every CEP.
	RemoteEndpoints k8scell.EndpointIdentities `optional:"true"`
}

// clusterRange narrows the cluster identity range; tests provide one to
// reach exhaustion (export_test.go). Zero: the full range.
type clusterRange struct{ min, max tables.NumericIdentity }

func registerController(p controllerParams) {
	c := &controller{
		log:        p.Log,
		db:         p.DB,
		endpoints:  p.Endpoints,
		identities: p.Identities,
		filter:     p.Filter,
		store:      FileStore{Dir: p.StateDir},
		failed:     map[uint16]error{},
		idRange:    clusterRange{tables.MinClusterIdentity, tables.MaxClusterIdentity},
	}
	if p.Range != (clusterRange{}) {
		c.idRange = p.Range
	}
	// Other cells (ipcache, policy) wait for the identities table to be
	// initialized: it is once the persisted identities are back.
	wtxn := p.DB.WriteTxn(p.Identities)
	c.identitiesLoaded = p.Identities.RegisterInitializer(wtxn, "identity-allocator")
	wtxn.Commit()

	if p.Clientset.IsEnabled() {
		if p.Config.IdentityGCGrace <= 0 {
			p.Config.IdentityGCGrace = DefaultConfig.IdentityGCGrace
		}
		c.cluster = NewClusterAllocator(p.Clientset, c.idRange.min, c.idRange.max)
		cacheCtx, stopCaches := context.WithCancel(context.Background())
		if p.K8sStatus != nil {
			c.cluster.SetWatchErrorHandlers(func(r string) cache.WatchErrorHandlerWithContext {
				return p.K8sStatus.WatchErrors(r, p.Log)
			})
			c.cluster.CountEvents(p.K8sStatus.Event)
		}
		p.Lifecycle.Append(cell.Hook{
			OnStart: func(cell.HookContext) error { c.cluster.Start(cacheCtx); return nil },
			OnStop:  func(cell.HookContext) error { stopCaches(); return nil },
		})
		gc := newCollector(p, c.cluster, p.Config.IdentityGCGrace)
		p.Jobs.Add(job.OneShot("identity-gc", gc.run))
		if p.K8sStatus != nil {
			p.Jobs.Add(job.OneShot("identity-cache-status", func(ctx context.Context, _ cell.Health) error {
				p.K8sStatus.Cache(IdentitiesResource, false, "")
				if c.cluster.WaitSynced(ctx) {
					p.K8sStatus.Cache(IdentitiesResource, true, "every CiliumIdentity, identity claims")
				}
				return nil
			}))
		}
	}
	// The hook is appended before the job, so the allocator is open when
	// the controller starts.
	p.Lifecycle.Append(cell.Hook{OnStart: c.start})
	p.Jobs.Add(job.OneShot("identity-controller", c.run))
	p.Log.Debug("Security-label filter", "patterns", p.Filter.Patterns(), "allow-list", p.Filter.AllowList())
}
