package metrics

import (
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/prometheus/client_golang/prometheus"

	agentmetrics "github.com/membrane-net/membrane/metrics"
)

// stateDBMetrics is statedb's Metrics interface on Prometheus. The
// database takes it from the hive (statedb.Cell's optional Metrics); the
// handle of a write transaction is the module that took it, so every
// label is bounded by the agent's code.
type stateDBMetrics struct {
	acquisition *prometheus.HistogramVec
	duration    *prometheus.HistogramVec
	objects     *prometheus.GaugeVec
	graveyard   *prometheus.GaugeVec
	gyLowMark   *prometheus.GaugeVec
	gyCleaning  *prometheus.HistogramVec
	deleteTrack *prometheus.GaugeVec
	revision    *prometheus.GaugeVec
}

// txnBuckets: a write transaction takes microseconds; one that waits for
// a lock or writes thousands of rows, milliseconds.
var txnBuckets = prometheus.ExponentialBuckets(0.00001, 4, 9)

func newStateDBMetrics(r *Registry) statedb.Metrics {
	if r.Reg == nil {
		return nil // statedb's own unpublished counters
	}
	ns, sub := agentmetrics.Namespace, "statedb"
	table := []string{agentmetrics.LabelTable}
	handle := []string{agentmetrics.LabelHandle}
	m := &stateDBMetrics{
		acquisition: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "write_txn_acquisition_seconds", Help: "Time a write transaction waited for its tables' locks, by handle (the module)",
			Buckets: txnBuckets}, handle),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "write_txn_duration_seconds", Help: "Time a write transaction held its tables' locks, by handle (the module)",
			Buckets: txnBuckets}, handle),
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "table_objects", Help: "Rows in a table"}, table),
		graveyard: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "table_graveyard_objects", Help: "Deleted rows of a table kept until every change iterator has seen them"}, table),
		gyLowMark: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "table_graveyard_low_watermark", Help: "Lowest revision of a table's deleted rows a change iterator has not seen yet"}, table),
		gyCleaning: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "table_graveyard_cleaning_duration_seconds", Help: "Time to clean a table's graveyard",
			Buckets: txnBuckets}, table),
		deleteTrack: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "table_delete_trackers", Help: "Change iterators (delete trackers) following a table"}, table),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "table_revision", Help: "A table's current revision"}, table),
	}
	r.register(m.acquisition, m.duration, m.objects, m.graveyard, m.gyLowMark, m.gyCleaning, m.deleteTrack, m.revision)
	return m
}

func (m *stateDBMetrics) WriteTxnTableAcquisition(string, string, time.Duration) {}

func (m *stateDBMetrics) WriteTxnTotalAcquisition(handle string, _ []string, d time.Duration) {
	m.acquisition.WithLabelValues(handle).Observe(d.Seconds())
}

func (m *stateDBMetrics) WriteTxnDuration(handle string, _ []string, d time.Duration) {
	m.duration.WithLabelValues(handle).Observe(d.Seconds())
}

func (m *stateDBMetrics) GraveyardLowWatermark(table string, rev statedb.Revision) {
	m.gyLowMark.WithLabelValues(table).Set(float64(rev))
}

func (m *stateDBMetrics) GraveyardCleaningDuration(table string, d time.Duration) {
	m.gyCleaning.WithLabelValues(table).Observe(d.Seconds())
}

func (m *stateDBMetrics) GraveyardObjectCount(table string, n int) {
	m.graveyard.WithLabelValues(table).Set(float64(n))
}

func (m *stateDBMetrics) ObjectCount(table string, n int) {
	m.objects.WithLabelValues(table).Set(float64(n))
}

func (m *stateDBMetrics) DeleteTrackerCount(table string, n int) {
	m.deleteTrack.WithLabelValues(table).Set(float64(n))
}

func (m *stateDBMetrics) Revision(table string, rev statedb.Revision) {
	m.revision.WithLabelValues(table).Set(float64(rev))
}

// reconcilerMetrics is the reconciler's Metrics interface on Prometheus;
// every reconciler of the hive takes it (reconciler.Params'
// DefaultMetrics). Each reconciler is named after its table
// (reconciler.WithName), the label here.
type reconcilerMetrics struct {
	duration    *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	failing     *prometheus.GaugeVec
	pruneErrors *prometheus.CounterVec
	pruneTime   *prometheus.HistogramVec
}

func newReconcilerMetrics(r *Registry) reconciler.Metrics {
	if r.Reg == nil {
		return nil // the reconciler's own unpublished counters
	}
	ns, sub := agentmetrics.Namespace, "reconciler"
	table := []string{agentmetrics.LabelTable}
	m := &reconcilerMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "operation_duration_seconds", Help: "Time to reconcile a batch of a table's changes into their target, by table and operation (update, delete)",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10)}, []string{agentmetrics.LabelTable, agentmetrics.LabelOperation}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Operations on a table's rows that failed (each is retried with backoff), by table"}, table),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "retry_queue_objects", Help: "Rows of a table whose last operation failed and that wait for a retry, by table"}, table),
		pruneErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "prune_errors_total", Help: "Prunes (removing what no row explains) that failed, by table"}, table),
		pruneTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "prune_duration_seconds", Help: "Time to prune a table's target, by table",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}, table),
	}
	r.register(m.duration, m.errors, m.failing, m.pruneErrors, m.pruneTime)
	return m
}

// reconcilerName is the table label: the reconciler's name, or its
// module for one registered without a name.
func reconcilerName(module cell.FullModuleID, name string) string {
	if name != "" {
		return name
	}
	return strings.Join(module, ".")
}

func (m *reconcilerMetrics) ReconciliationDuration(module cell.FullModuleID, name, op string, d time.Duration) {
	m.duration.WithLabelValues(reconcilerName(module, name), op).Observe(d.Seconds())
}

func (m *reconcilerMetrics) ReconciliationErrors(module cell.FullModuleID, name string, new, current int) {
	n := reconcilerName(module, name)
	m.errors.WithLabelValues(n).Add(float64(new))
	m.failing.WithLabelValues(n).Set(float64(current))
}

func (m *reconcilerMetrics) PruneError(module cell.FullModuleID, name string, err error) {
	if err != nil {
		m.pruneErrors.WithLabelValues(reconcilerName(module, name)).Inc()
	} else {
		m.pruneErrors.WithLabelValues(reconcilerName(module, name)) // the series exists from the first prune
	}
}

func (m *reconcilerMetrics) PruneDuration(module cell.FullModuleID, name string, d time.Duration) {
	m.pruneTime.WithLabelValues(reconcilerName(module, name)).Observe(d.Seconds())
}
