package monitor

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// TestDatapathEventReachesSubscriber runs the real to_container program
// with BPF_PROG_RUN on a TCP packet from db to web's port 80, with web's
// ingress enforced and no policy entry: the program drops it and writes an
// event to the ring buffer, which the monitor reads, decodes and enriches.
// BPF_PROG_RUN runs tc programs on the loopback device, so the endpoint
// entry is keyed by ifindex 1.
func TestDatapathEventReachesSubscriber(t *testing.T) {
	coll := loadDatapath(t)

	m := newTestMonitor(t)
	m.enrich.clock = monotonicClock // the real conversion, checked below
	drops := m.Subscribe(models.MonitorFilter{Type: models.MonitorTypeDrop, Endpoint: webEP}, 8)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx, coll.Maps[maps.EventsMapName]) }()

	before := time.Now()
	ret, err := coll.Programs["to_container"].Run(&ebpf.RunOptions{Data: testutil.TCP4(dbIP, webIP, 41234, 80)})
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	if ret != 2 { // TC_ACT_SHOT
		t.Fatalf("program returned %d, want a drop", ret)
	}
	var got models.MonitorEvent
	select {
	case got = <-drops.Events():
	case <-time.After(10 * time.Second):
		t.Fatalf("no event reached the subscriber (stats %+v)", m.Stats())
	}
	after := time.Now()

	if got.Time.Before(before.Add(-time.Second)) || got.Time.After(after.Add(time.Second)) {
		t.Errorf("event time %v, want between %v and %v", got.Time, before, after)
	}
	want := wantDrop()
	want.Time = got.Time
	want.Endpoint.InterfaceIndex = 1
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event\n%+v\nwant\n%+v", got, want)
	}

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if _, ok := <-drops.Events(); ok {
		t.Fatal("subscription open after the reader stopped")
	}
}

// loadDatapath loads the datapath unpinned, with web's ingress enforced
// and no policy entry: a TCP packet from db to web is dropped with an event.
func loadDatapath(t *testing.T) *ebpf.Collection {
	coll := testutil.LoadDatapath(t)
	put := func(m string, k, v any) {
		t.Helper()
		if err := coll.Maps[m].Put(k, v); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	ep := maps.NewEndpointValue(webEP, webIdent, webIP, netip.Addr{}, "", "")
	ep.Flags |= maps.EndpointFlagIngressEnforced
	put(maps.EndpointsMapName, maps.EndpointKey{IfIndex: 1}, ep)
	put(maps.IPCacheMapName, maps.NewIPCacheKey(netip.PrefixFrom(dbIP, 32)), maps.IPCacheValue{Identity: dbIdent})
	put(maps.IPCacheMapName, maps.NewIPCacheKey(netip.PrefixFrom(webIP, 32)), maps.IPCacheValue{Identity: webIdent})

	return coll
}

// TestStatsCountLostEvents: with nobody reading the ring buffer, the
// program's events fill it and the rest are counted lost in the metrics
// map; /v1/monitor/stats reports them, and once the reader runs, every
// event is either received or counted lost.
func TestStatsCountLostEvents(t *testing.T) {
	coll := loadDatapath(t)
	m := newTestMonitor(t)
	const n = 20000 // more records than the 1 MiB ring holds
	if _, err := coll.Programs["to_container"].Run(&ebpf.RunOptions{Data: testutil.TCP4(dbIP, webIP, 41234, 80), Repeat: n}); err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	st, err := m.StatsWithDatapath(coll.Maps[maps.MetricsMapName])
	if err != nil {
		t.Fatal(err)
	}
	if st.LostInDatapath == 0 || st.LostInDatapath >= n || st.Received != 0 {
		t.Fatalf("stats %+v before reading, want some of %d events lost and none received", st, n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx, coll.Maps[maps.EventsMapName]) }()
	defer func() { cancel(); <-ran }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err = m.StatsWithDatapath(coll.Maps[maps.MetricsMapName])
		if err != nil {
			t.Fatal(err)
		}
		if st.Received+st.LostInDatapath == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: received and lost do not add up to %d", st, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
