package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Run reads the events ring buffer into the monitor until ctx is done, then
// closes every subscription. It must be the only reader of that ring
// buffer: records go to whichever reader consumes them first.
func (m *Monitor) Run(ctx context.Context, ring *ebpf.Map) (err error) {
	defer func() { m.stop(err) }()
	if ring == nil {
		return errors.New("no events ring buffer: the datapath is not loaded")
	}
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		return fmt.Errorf("open events ring buffer: %w", err)
	}
	stopped := context.AfterFunc(ctx, func() { rd.Close() })
	defer func() {
		stopped()
		rd.Close()
	}()

	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read events ring buffer: %w", err)
		}
		m.publishRecord(rec.RawSample)
	}
}
