package monitor

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// These tests feed the monitor records as the ring buffer holds them and
// check what subscribers get. prog_test.go runs the real datapath program.

const (
	webEP    = 1234
	dbIdent  = 300
	webIdent = 301
)

var (
	dbIP  = netip.MustParseAddr("10.0.0.5")
	webIP = netip.MustParseAddr("10.0.0.6")
	// The clock the tests give the monitor: kernel time 1s is this instant.
	bootPlus1s = time.Date(2025, 3, 4, 12, 0, 1, 123_000_000, time.UTC)
)

// newTestMonitor returns a monitor over tables holding endpoint 1234
// (pod default/web, identity 301) and identities 300 (app=db), 301 (app=web).
func newTestMonitor(t *testing.T) *Monitor {
	t.Helper()
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tables.NewIdentitiesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(eps, ids)
	eps.Insert(wtxn, &tables.Endpoint{ID: webEP, ContainerID: "c1", ContainerIfName: "eth0", K8sNamespace: "default", K8sPodName: "web",
		IPv4: webIP, Identity: webIdent})
	for id, app := range map[uint32]string{dbIdent: "db", webIdent: "web"} {
		ids.Insert(wtxn, &tables.Identity{ID: id, Labels: labels.New(
			labels.Label{Source: labels.SourceK8s, Key: "app", Value: app},
			labels.Label{Source: labels.SourceK8s, Key: labels.NamespaceKey, Value: "default"})})
	}
	wtxn.Commit()

	m := New(slog.New(slog.DiscardHandler), db, eps, ids)
	m.enrich.clock = func(ktime uint64) time.Time {
		return bootPlus1s.Add(time.Duration(ktime) - time.Second)
	}
	return m
}

// rawEvent is a record of the datapath: a TCP packet db -> web, seen at
// web's ingress, ktime 1s.
func rawEvent(typ, reason uint8, sport uint16) maps.Event {
	ev := maps.Event{
		Timestamp: uint64(time.Second), IfIndex: 41, EndpointID: webEP, Dir: 0, Reason: reason,
		SrcIdentity: dbIdent, DstIdentity: webIdent, Protocol: 6, Family: maps.FamilyIPv4, Type: typ,
	}
	s, d := dbIP.As4(), webIP.As4()
	copy(ev.SAddr[:], s[:])
	copy(ev.DAddr[:], d[:])
	binary.BigEndian.PutUint16(ev.SPort[:], sport)
	binary.BigEndian.PutUint16(ev.DPort[:], 80)
	return ev
}

func record(t *testing.T, ev maps.Event) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, ev); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var drop = rawEvent(maps.EventDrop, maps.ReasonDropPolicy, 41234)

// wantDrop is what a subscriber gets for drop.
func wantDrop() models.MonitorEvent {
	return models.MonitorEvent{
		Time: bootPlus1s, Type: models.MonitorTypeDrop, Verdict: models.MonitorVerdictDropped, Reason: "policy-denied",
		Endpoint:  models.MonitorEndpoint{ID: webEP, Pod: "default/web", InterfaceIndex: 41},
		Direction: "ingress", Protocol: "TCP",
		Source: models.MonitorPeer{IP: "10.0.0.5", Port: 41234,
			Identity: models.MonitorIdentity{ID: dbIdent, Labels: []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=default"}}},
		Destination: models.MonitorPeer{IP: "10.0.0.6", Port: 80,
			Identity: models.MonitorIdentity{ID: webIdent, Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"}}},
	}
}

func TestDecode(t *testing.T) {
	if EventSize != 64 {
		t.Fatalf("maps.Event is %d bytes, struct event in bpf/membrane.c is 64", EventSize)
	}
	raw := record(t, drop)
	got, err := Decode(raw)
	if err != nil || got != drop {
		t.Fatalf("Decode = %+v, %v; want %+v", got, err, drop)
	}
	// The ring buffer pads records to 8 bytes: trailing bytes are ignored.
	if got, err := Decode(append(raw, 0, 0, 0, 0)); err != nil || got != drop {
		t.Fatalf("padded record: %+v, %v", got, err)
	}
	if _, err := Decode(raw[:63]); err == nil || !strings.Contains(err.Error(), "63 bytes, want 64") {
		t.Fatalf("short record: %v", err)
	}
	// Field offsets as the C struct lays them out.
	if raw[15] != maps.ReasonDropPolicy || raw[14] != 0 || binary.LittleEndian.Uint16(raw[12:]) != webEP || binary.LittleEndian.Uint32(raw[16:]) != dbIdent ||
		binary.BigEndian.Uint16(raw[58:]) != 80 || raw[60] != 6 || raw[61] != maps.FamilyIPv4 || raw[62] != maps.EventDrop {
		t.Fatalf("layout: % x", raw)
	}
}

func TestEnrich(t *testing.T) {
	m := newTestMonitor(t)
	sub := m.Subscribe(models.MonitorFilter{}, 8)
	defer sub.Close()
	m.publishRecord(record(t, drop))
	got := <-sub.Events()
	if want := wantDrop(); !reflect.DeepEqual(got, want) {
		t.Fatalf("event\n%+v\nwant\n%+v", got, want)
	}

	// A verdict at egress, IPv6 ICMP echo, to a peer the tables do not know
	// and from an endpoint that is gone; world is reserved.
	v := maps.Event{Timestamp: uint64(2 * time.Second), EndpointID: 7, Dir: 1, Reason: maps.ReasonForwardedPolicy,
		SrcIdentity: webIdent, DstIdentity: 2, Protocol: 58, Family: maps.FamilyIPv6, Type: maps.EventVerdict}
	v.SAddr = netip.MustParseAddr("fd00::6").As16()
	v.DAddr = netip.MustParseAddr("2001:db8::1").As16()
	binary.BigEndian.PutUint16(v.SPort[:], 77)  // echo id
	binary.BigEndian.PutUint16(v.DPort[:], 128) // ICMPv6 echo request
	m.Publish(v)
	got = <-sub.Events()
	icmpType := uint8(128)
	want := models.MonitorEvent{
		Time: bootPlus1s.Add(time.Second), Type: models.MonitorTypeVerdict, Verdict: models.MonitorVerdictForwarded, Reason: "allowed-by-policy",
		Endpoint: models.MonitorEndpoint{ID: 7}, Direction: "egress", Protocol: "ICMPv6", ICMPType: &icmpType,
		Source: models.MonitorPeer{IP: "fd00::6",
			Identity: models.MonitorIdentity{ID: webIdent, Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"}}},
		Destination: models.MonitorPeer{IP: "2001:db8::1", Identity: models.MonitorIdentity{ID: 2, Labels: []string{"reserved:world"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event\n%+v\nwant\n%+v", got, want)
	}

	// The JSON an operator's script reads.
	b, _ := json.Marshal(wantDrop())
	for _, k := range []string{`"time":"2025-03-04T12:00:01.123Z"`, `"type":"drop"`, `"verdict":"dropped"`, `"reason":"policy-denied"`,
		`"endpoint":{"id":1234,"pod":"default/web","interface-index":41}`, `"direction":"ingress"`, `"protocol":"TCP"`,
		`"source":{"ip":"10.0.0.5","port":41234,"identity":{"id":300,"labels":["k8s:app=db"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}

	// Undecodable records are counted, not delivered.
	m.publishRecord([]byte{1, 2, 3})
	if s := m.Stats(); s.Received != 2 || s.Invalid != 1 {
		t.Fatalf("stats %+v", s)
	}
	select {
	case ev := <-sub.Events():
		t.Fatalf("undecodable record delivered: %+v", ev)
	default:
	}
}

func TestFilters(t *testing.T) {
	m := newTestMonitor(t)
	all := m.Subscribe(models.MonitorFilter{}, 16)
	drops := m.Subscribe(models.MonitorFilter{Type: models.MonitorTypeDrop}, 16)
	verdicts := m.Subscribe(models.MonitorFilter{Type: models.MonitorTypeVerdict}, 16)
	other := m.Subscribe(models.MonitorFilter{Endpoint: 99}, 16)

	m.Publish(drop)
	m.Publish(rawEvent(maps.EventVerdict, maps.ReasonForwardedPolicy, 1))
	other99 := rawEvent(maps.EventDrop, maps.ReasonDropSpoofed, 2)
	other99.EndpointID = 99
	m.Publish(other99)

	count := func(s *Subscription) (n int, reasons []string) {
		for {
			select {
			case ev := <-s.Events():
				n++
				reasons = append(reasons, ev.Reason)
			default:
				return
			}
		}
	}
	for _, c := range []struct {
		name string
		sub  *Subscription
		want []string
	}{
		{"all", all, []string{"policy-denied", "allowed-by-policy", "spoofed-source"}},
		{"drops", drops, []string{"policy-denied", "spoofed-source"}},
		{"verdicts", verdicts, []string{"allowed-by-policy"}},
		{"endpoint 99", other, []string{"spoofed-source"}},
	} {
		if _, got := count(c.sub); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	m := newTestMonitor(t)
	slow := m.Subscribe(models.MonitorFilter{}, 4) // never reads
	fast := m.Subscribe(models.MonitorFilter{}, 4)
	const n = 1000
	var (
		wg  sync.WaitGroup
		got []uint16
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range fast.Events() {
			got = append(got, ev.Source.Port)
		}
	}()

	done := make(chan struct{})
	go func() {
		for i := range n {
			m.Publish(rawEvent(maps.EventDrop, maps.ReasonDropPolicy, uint16(i)))
			// Let the fast reader keep up: it must not lose anything.
			for len(fast.c) == cap(fast.c) {
				time.Sleep(time.Microsecond)
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	fast.Close()
	wg.Wait()

	if len(got) != n || got[0] != 0 || got[n-1] != n-1 {
		t.Fatalf("fast subscriber got %d events (first %v), want all %d in order", len(got), got[:min(3, len(got))], n)
	}
	if len(slow.c) != 4 || slow.Dropped() != n-4 {
		t.Fatalf("slow subscriber: %d queued, %d dropped; want 4 and %d", len(slow.c), slow.Dropped(), n-4)
	}
	if first := <-slow.Events(); first.Source.Port != 0 {
		t.Fatalf("slow subscriber keeps the oldest events, got port %d first", first.Source.Port)
	}
	if s := m.Stats(); s.Dropped != n-4 || s.Subscribers != 1 {
		t.Fatalf("stats %+v", s)
	}
	slow.Close()
	slow.Close() // idempotent
	if s := m.Stats(); s.Subscribers != 0 {
		t.Fatalf("subscribers after Close: %d", s.Subscribers)
	}
}

func TestStopClosesSubscriptions(t *testing.T) {
	m := newTestMonitor(t)
	sub := m.Subscribe(models.MonitorFilter{}, 1)
	m.stop(nil)
	if _, ok := <-sub.Events(); ok {
		t.Fatal("subscription still open after stop")
	}
	late := m.Subscribe(models.MonitorFilter{}, 1)
	if _, ok := <-late.Events(); ok {
		t.Fatal("subscription after stop is open")
	}
	sub.Close()
	late.Close()
}

// blockingWriter is a ResponseWriter whose writes wait for release, so a
// test can hold an HTTP subscriber back.
type blockingWriter struct {
	header  http.Header
	blocked chan struct{} // gets a value when a write starts waiting
	release chan struct{}
	mu      sync.Mutex
	body    bytes.Buffer
	code    int
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(code int) {
	w.code = code
}
func (w *blockingWriter) Flush() {}
func (w *blockingWriter) Write(b []byte) (int, error) {
	select {
	case w.blocked <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}

func TestHandlerStreamsAndReportsLoss(t *testing.T) {
	m := newTestMonitor(t)
	w := &blockingWriter{header: http.Header{}, blocked: make(chan struct{}, 1), release: make(chan struct{})}
	r := httptest.NewRequest("GET", "/v1/monitor?type=drop", nil)
	served := make(chan struct{})
	go func() {
		m.Handler(1).ServeHTTP(w, r)
		close(served)
	}()
	waitFor(t, func() bool { return m.Stats().Subscribers == 1 })

	// The first event is taken and its write blocks; the second waits in
	// the queue of 1; the next 8 are lost; a verdict is filtered out.
	m.Publish(rawEvent(maps.EventDrop, maps.ReasonDropPolicy, 1))
	<-w.blocked
	for i := range 9 {
		m.Publish(rawEvent(maps.EventDrop, maps.ReasonDropPolicy, uint16(2+i)))
	}
	m.Publish(rawEvent(maps.EventVerdict, maps.ReasonForwardedPolicy, 100))
	close(w.release)
	waitFor(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return strings.Count(w.body.String(), "\n") == 3
	})
	m.stop(nil) // the agent stops: the stream ends
	<-served

	if w.code != 200 || w.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("answer %d %q", w.code, w.header.Get("Content-Type"))
	}
	var got []models.MonitorEvent
	sc := bufio.NewScanner(strings.NewReader(w.body.String()))
	for sc.Scan() {
		var ev models.MonitorEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, ev)
	}
	if len(got) != 3 || got[0].Source.Port != 1 || got[1].Type != models.MonitorTypeLost || got[1].Lost != 8 || got[2].Source.Port != 2 {
		t.Fatalf("stream %+v", got)
	}
}

func TestHandlerOverHTTP(t *testing.T) {
	m := newTestMonitor(t)
	srv := httptest.NewServer(m.Handler(16))
	defer srv.Close()

	for _, q := range []string{"type=bogus", "endpoint=x", "endpoint=0", "endpoint=70000"} {
		resp, err := http.Get(srv.URL + "/v1/monitor?" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), `"code": 400`) {
			t.Errorf("%s: %d %s", q, resp.StatusCode, body)
		}
	}

	resp, err := http.Get(srv.URL + "/v1/monitor?endpoint=1234&type=all")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, func() bool { return m.Stats().Subscribers == 1 })
	m.Publish(drop)
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var ev models.MonitorEvent
	if err := json.Unmarshal(line, &ev); err != nil || !reflect.DeepEqual(ev, normalizeTime(wantDrop())) {
		t.Fatalf("streamed %s (%v)", line, err)
	}

	// A monitor that cannot read the ring buffer says so.
	m.stop(errTest)
	r2, err := http.Get(srv.URL + "/v1/monitor")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 503 || !strings.Contains(string(body), "does not read datapath events: no ring buffer here") {
		t.Fatalf("after failure: %d %s", r2.StatusCode, body)
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("no ring buffer here")

// normalizeTime makes an event's time compare equal after a JSON round trip.
func normalizeTime(ev models.MonitorEvent) models.MonitorEvent {
	b, _ := json.Marshal(ev)
	var out models.MonitorEvent
	json.Unmarshal(b, &out)
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseFilter(t *testing.T) {
	for q, want := range map[string]models.MonitorFilter{
		"":                        {},
		"type=all":                {},
		"type=drop":               {Type: models.MonitorTypeDrop},
		"type=verdict&endpoint=7": {Type: models.MonitorTypeVerdict, Endpoint: 7},
	} {
		vals, _ := url.ParseQuery(q)
		got, err := models.ParseMonitorFilter(vals)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v", q, got, err)
		}
		if back, _ := models.ParseMonitorFilter(got.Query()); back != got {
			t.Errorf("%q: Query round trip %+v", q, back)
		}
	}
}
