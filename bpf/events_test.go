package bpf_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/membrane-net/membrane/datapath/maps"
)

// events reads the datapath's monitor events until the test ends.
func (d *datapath) events() *ringbuf.Reader {
	d.t.Helper()
	rd, err := ringbuf.NewReader(d.coll.Maps[maps.EventsMapName])
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { rd.Close() })
	return rd
}

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
