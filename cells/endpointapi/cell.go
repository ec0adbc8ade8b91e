// Package endpointapi is the "CNI endpoint" path of the API: the handlers
// of /v1/endpoint, the EndpointAPIManager they hand requests to, and the
// endpoint creator (NewEndpointFromChangeModel). It is steps 2, 3 and 9 of
// the endpoint story (docs/endpoint-lifecycle.md): rate limit and decode a
// PUT from membrane-cni, validate, give the endpoint to the endpoint
// manager (which rejects duplicates and merges the pod's labels), and with
// sync-build-endpoint answer only once the endpoint is ready (or remove it
// and say why).
//
// Try it: membrane endpoint list; membrane endpoint log ID.
package endpointapi

import (
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Config of the endpoint API.
type Config struct {
	SyncBuildTimeout time.Duration
	// Rate limiting of endpoint create and delete requests.
	EndpointAPIParallel int
	EndpointAPIRate     float64
	EndpointAPIBurst    int
	EndpointAPIMaxWait  time.Duration
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.Duration("sync-build-timeout", def.SyncBuildTimeout,
		"How long a sync-build endpoint request waits for the endpoint to be ready before it is removed and answered 504")
	fs.Int("endpoint-api-parallel", def.EndpointAPIParallel, "Endpoint create (and, separately, delete) requests processed at once")
	fs.Float64("endpoint-api-rate", def.EndpointAPIRate, "Endpoint create (and delete) requests started per second")
	fs.Int("endpoint-api-burst", def.EndpointAPIBurst, "Burst above --endpoint-api-rate")
	fs.Duration("endpoint-api-max-wait", def.EndpointAPIMaxWait, "How long an endpoint request queues for the limiter before it is answered 429")
}

// DefaultConfig: generous enough for bursts of pods, bounded so a flood
// queues briefly and then gets 429s instead of piling up.
var DefaultConfig = Config{
	SyncBuildTimeout:    syncBuildTimeoutDefault,
	EndpointAPIParallel: 16,
	EndpointAPIRate:     100,
	EndpointAPIBurst:    50,
	EndpointAPIMaxWait:  15 * time.Second,
}

// Cell serves /v1/endpoint.
var Cell = cell.Module(
	"endpoint-api",
	"Endpoint API handlers and API manager and creator",

	cell.Config(DefaultConfig),
	cell.Provide(newEndpointAPIManager, newRoutes),
)

// newEndpointAPIManager takes the endpoint manager as the concrete type the
// manager cell provides, and keeps only what the API needs of it (seam.go).
func newEndpointAPIManager(log *slog.Logger, db *statedb.DB, endpoints statedb.Table[*tables.Endpoint],
	m *endpointmanager.EndpointManager, cfg Config) *EndpointAPIManager {
	return &EndpointAPIManager{log: log, db: db, endpoints: endpoints, manager: m, cfg: cfg}
}

func newRoutes(db *statedb.DB, mgr *EndpointAPIManager, endpoints statedb.Table[*tables.Endpoint],
	ids statedb.Table[*tables.Identity], cfg Config) apiserver.RoutesOut {
	h := &handlers{
		db: db, mgr: mgr, endpoints: endpoints, identities: ids,
		create: newAPILimiter("endpoint create", cfg.EndpointAPIParallel, cfg.EndpointAPIRate, cfg.EndpointAPIBurst, cfg.EndpointAPIMaxWait),
		delete: newAPILimiter("endpoint delete", cfg.EndpointAPIParallel, cfg.EndpointAPIRate, cfg.EndpointAPIBurst, cfg.EndpointAPIMaxWait),
	}
	return h.routes()
}
