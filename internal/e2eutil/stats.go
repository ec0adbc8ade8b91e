package e2eutil

import (
	"math"
	"slices"
	"sync"
	"time"
)

// The benchmarks' statistics: they report numbers and assert no timing.

// Percentile is the nearest-rank percentile q (0..100) of xs.
func Percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(q / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// Median is the middle value (the mean of the two middle ones for an
// even count).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Makespan runs f on every item at once and returns the time until the
// last one finished, and the first error.
func Makespan[T any](items []T, f func(T) error) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(items))
	start := time.Now()
	for k, it := range items {
		wg.Go(func() { errs[k] = f(it) })
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return d, err
		}
	}
	return d, nil
}
