// Package metrics holds the Prometheus metrics the agent's cells record
// as they work: API requests, the endpoint API's rate limiter, endpoint
// regeneration, policy imports, the hive's start and stop. Cells import
// this library (like statedb/tables), never the metrics cell
// (cells/metrics), which registers these with a registry of its own next
// to the metrics it computes on each scrape (endpoints by state,
// identities, datapath counters, statedb). Recording costs an atomic add
// and happens whether or not the agent serves metrics
// (--prometheus-serve-addr); docs/metrics.md lists every metric.
//
// Conventions (Prometheus's and Cilium's): the membrane_ prefix, base
// units (seconds, bytes), _total on counters, and labels of bounded
// cardinality only: a route pattern, a status code, a reason, never an
// endpoint, a pod or an address.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric of the agent.
const Namespace = "membrane"

// Label names shared by the agent's metrics.
const (
	LabelRoute     = "route"
	LabelCode      = "code"
	LabelLimiter   = "limiter"
	LabelSource    = "source"
	LabelState     = "state"
	LabelKind      = "kind"
	LabelReason    = "reason"
	LabelDirection = "direction"
	LabelTable     = "table"
	LabelHandle    = "handle"
	LabelOperation = "operation"
)

// latencyBuckets span an in-memory API call (100µs) to a request that
// waited out the rate limiter (~10s).
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 4, 9)

var (
	// APIRequests counts the REST API's requests by route pattern (as
	// registered, e.g. "PUT /v1/endpoint/{id}"; "other" for a path no
	// route serves) and status code.
	APIRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "api", Name: "requests_total",
		Help: "REST API requests by route pattern and HTTP status code",
	}, []string{LabelRoute, LabelCode})

	// APIRequestDuration is the time to answer an API request, by route.
	APIRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "api", Name: "request_duration_seconds",
		Help:    "Time to answer a REST API request, by route pattern",
		Buckets: latencyBuckets,
	}, []string{LabelRoute})

	// APILimiterWaitDuration is how long a request queued for a rate
	// limiter of the endpoint API, whether it then ran or got a 429.
	APILimiterWaitDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "api_limiter", Name: "wait_duration_seconds",
		Help:    "Time an API request queued for a rate limiter, by limiter",
		Buckets: latencyBuckets,
	}, []string{LabelLimiter})

	// APILimiterRejected counts the requests a rate limiter answered 429.
	APILimiterRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "api_limiter", Name: "rejected_total",
		Help: "API requests a rate limiter answered 429 Too Many Requests, by limiter",
	}, []string{LabelLimiter})

	// EndpointRegenerationDuration is the time from an endpoint entering
	// regenerating to ready: its datapath rows written and reconciled.
	EndpointRegenerationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "endpoint", Name: "regeneration_duration_seconds",
		Help:    "Time from an endpoint entering regenerating to ready (its datapath in the kernel)",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})

	// PolicyImports counts the changes of the policy repository's rules
	// by source (api, k8s), each a new policy revision.
	PolicyImports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "policy", Name: "imports_total",
		Help: "Policy changes written to the repository (each a new revision), by source",
	}, []string{LabelSource})

	// PolicyImportErrors counts the policy documents or objects refused.
	PolicyImportErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "policy", Name: "import_errors_total",
		Help: "Policy documents or objects refused (parse or validation errors), by source",
	}, []string{LabelSource})

	// HiveStartDuration and HiveStopDuration time the agent's start and
	// stop hooks (HiveTimer).
	HiveStartDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "hive", Name: "start_duration_seconds",
		Help: "Time the agent's cells took to start (every start hook); 0 until started",
	})
	HiveStopDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "hive", Name: "stop_duration_seconds",
		Help: "Time the agent's cells took to stop (every stop hook); 0 until the agent stops",
	})
)

// Collectors are the metrics of this package, for a registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		APIRequests, APIRequestDuration,
		APILimiterWaitDuration, APILimiterRejected,
		EndpointRegenerationDuration,
		PolicyImports, PolicyImportErrors,
		HiveStartDuration, HiveStopDuration,
	}
}
