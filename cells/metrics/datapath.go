package metrics

import (
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/membrane-net/membrane/datapath/maps"
	agentmetrics "github.com/membrane-net/membrane/metrics"
)

var (
	dpLabels         = []string{agentmetrics.LabelReason, agentmetrics.LabelDirection}
	forwardCountDesc = prometheus.NewDesc(agentmetrics.Namespace+"_forward_count_total",
		"Packets the datapath forwarded, by reason and direction (ingress: into a pod, egress: out of it)", dpLabels, nil)
	forwardBytesDesc = prometheus.NewDesc(agentmetrics.Namespace+"_forward_bytes_total",
		"Bytes the datapath forwarded, by reason and direction", dpLabels, nil)
	dropCountDesc = prometheus.NewDesc(agentmetrics.Namespace+"_drop_count_total",
		"Packets the datapath dropped, by reason and direction", dpLabels, nil)
	dropBytesDesc = prometheus.NewDesc(agentmetrics.Namespace+"_drop_bytes_total",
		"Bytes the datapath dropped, by reason and direction", dpLabels, nil)
	eventsLostDesc = prometheus.NewDesc(agentmetrics.Namespace+"_monitor_events_lost_total",
		"Monitor events the datapath's ring buffer had no room for (membrane monitor --stats)", nil, nil)
	datapathReadErrorsDesc = prometheus.NewDesc(agentmetrics.Namespace+"_datapath_metrics_read_errors_total",
		"Scrapes that could not read the datapath's metrics map (the agent's log says why)", nil, nil)
)

// datapathCollector sums the per-CPU metrics map (maps.MetricsMapName) on
// each scrape, over CPUs and endpoints: the map is keyed by endpoint,
// which would be a label per pod; `membrane bpf metrics --endpoint ID`
// has the per-endpoint counts. The counters live in the kernel and
// survive agent restarts, so they only grow.
type datapathCollector struct {
	maps       maps.EventMaps
	log        *slog.Logger
	readErrors atomic.Uint64 // scrapes may run concurrently
}

type dpKey struct{ dir, reason uint8 }

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{forwardCountDesc, forwardBytesDesc, dropCountDesc, dropBytesDesc, eventsLostDesc, datapathReadErrorsDesc} {
		ch <- d
	}
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	sums, lost, err := c.read()
	if err != nil {
		c.readErrors.Add(1)
		c.log.Warn("metrics: reading the datapath's metrics map", "error", err)
	}
	ch <- prometheus.MustNewConstMetric(datapathReadErrorsDesc, prometheus.CounterValue, float64(c.readErrors.Load()))
	if err != nil || sums == nil {
		return // no datapath (yet): no counters rather than zeros that would look like resets
	}
	ch <- prometheus.MustNewConstMetric(eventsLostDesc, prometheus.CounterValue, float64(lost))
	for k, v := range sums {
		count, bytes := forwardCountDesc, forwardBytesDesc
		if maps.IsDrop(k.reason) {
			count, bytes = dropCountDesc, dropBytesDesc
		}
		reason, dir := maps.ReasonName(k.reason), maps.DirectionName(k.dir)
		ch <- prometheus.MustNewConstMetric(count, prometheus.CounterValue, float64(v.Packets), reason, dir)
		ch <- prometheus.MustNewConstMetric(bytes, prometheus.CounterValue, float64(v.Bytes), reason, dir)
	}
}

// read sums the map; nil sums when the datapath is not loaded.
func (c *datapathCollector) read() (map[dpKey]maps.MetricsValue, uint64, error) {
	if c.maps == nil || c.maps.MetricsMap() == nil {
		return nil, 0, nil
	}
	sums := map[dpKey]maps.MetricsValue{}
	var lost uint64
	var k maps.MetricsKey
	var perCPU []maps.MetricsValue
	it := c.maps.MetricsMap().Iterate()
	for it.Next(&k, &perCPU) {
		var total maps.MetricsValue
		for _, v := range perCPU {
			total.Packets += v.Packets
			total.Bytes += v.Bytes
		}
		if k.Reason == maps.ReasonEventLost {
			lost += total.Packets
			continue
		}
		key := dpKey{k.Dir, k.Reason}
		s := sums[key]
		s.Packets += total.Packets
		s.Bytes += total.Bytes
		sums[key] = s
	}
	if err := it.Err(); err != nil {
		return nil, 0, err
	}
	return sums, lost, nil
}
