package bpf_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/membrane-net/membrane/datapath/maps"
)

func newReader(m *ebpf.Map) (*ringbuf.Reader, error) { return ringbuf.NewReader(m) }

func readEvent(t *testing.T, rd *ringbuf.Reader) maps.Event {
	t.Helper()
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	rec, err := rd.Read()
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	var ev maps.Event
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}
