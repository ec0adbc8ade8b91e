package identity

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

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
}

// DefaultConfig uses the default filter alone.
var DefaultConfig = Config{IdentityLabelFilter: []string{}}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.StringSlice("identity-label-filter", def.IdentityLabelFilter,
		"Label patterns added to the default security-label filter: [source:][!]regex on the key, anchored at its start; "+
			"'!' excludes (k8s:!version$); one inclusion (k8s:app) keeps only matching labels plus the namespace, "+
			"the namespace's labels, app.kubernetes.io and reserved labels. Comma-separated or repeated")
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

	// The hook is appended before the job, so the allocator is open when
	// the controller starts.
	p.Lifecycle.Append(cell.Hook{OnStart: c.start})
	p.Jobs.Add(job.OneShot("identity-controller", c.run))
	p.Log.Debug("Security-label filter", "patterns", p.Filter.Patterns(), "allow-list", p.Filter.AllowList())
}
