package metrics

import (
	"sync"
	"time"

	"github.com/cilium/hive/cell"
)

// HiveTimer returns two cells that time the hive's start and stop into
// HiveStartDuration and HiveStopDuration: first goes before every other
// cell, last after every other. Start hooks run in order and stop hooks in
// reverse, so first starts the clock of the start and stops the clock of
// the stop, last the other way round.
func HiveTimer() (first, last cell.Cell) {
	var (
		mu    sync.Mutex
		start time.Time
	)
	mark := func() error {
		mu.Lock()
		start = time.Now()
		mu.Unlock()
		return nil
	}
	since := func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return time.Since(start).Seconds()
	}
	first = cell.Invoke(func(lc cell.Lifecycle) {
		lc.Append(cell.Hook{
			OnStart: func(cell.HookContext) error { return mark() },
			OnStop:  func(cell.HookContext) error { HiveStopDuration.Set(since()); return nil },
		})
	})
	last = cell.Invoke(func(lc cell.Lifecycle) {
		lc.Append(cell.Hook{
			OnStart: func(cell.HookContext) error { HiveStartDuration.Set(since()); return nil },
			OnStop:  func(cell.HookContext) error { return mark() },
		})
	})
	return first, last
}
