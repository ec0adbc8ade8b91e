package endpointapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/time/rate"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/metrics"
)

// apiLimiter guards one kind of request the way Cilium's APILimiterSet
// does: at most Parallel run at once, at most Rate start per second (with
// Burst), and a request waits up to MaxWait for both before it is answered
// 429. A burst of pods therefore queues briefly instead of failing, and a
// flood cannot pile up unbounded work in the agent.
type apiLimiter struct {
	name    string
	slots   chan struct{}
	rate    *rate.Limiter
	maxWait time.Duration
}

func newAPILimiter(name string, parallel int, perSecond float64, burst int, maxWait time.Duration) *apiLimiter {
	if parallel < 1 {
		parallel = 1
	}
	if burst < 1 {
		burst = 1
	}
	// Series from the start, so a dashboard shows 0 rather than nothing.
	metrics.APILimiterRejected.WithLabelValues(name)
	metrics.APILimiterWaitDuration.WithLabelValues(name)
	return &apiLimiter{
		name:    name,
		slots:   make(chan struct{}, parallel),
		rate:    rate.NewLimiter(rate.Limit(perSecond), burst),
		maxWait: maxWait,
	}
}

// wait blocks until the request may proceed; the returned func releases the
// slot. The error is a 429 once MaxWait has passed.
func (l *apiLimiter) wait(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, l.maxWait)
	defer cancel()
	start := time.Now()
	defer func() { metrics.APILimiterWaitDuration.WithLabelValues(l.name).Observe(time.Since(start).Seconds()) }()
	tooMany := func() error {
		metrics.APILimiterRejected.WithLabelValues(l.name).Inc()
		return apiserver.Errorf(http.StatusTooManyRequests,
			"%s rate limited: waited %s for one of %d parallel slots at %.0f requests/s; retry later",
			l.name, l.maxWait, cap(l.slots), float64(l.rate.Limit()))
	}
	if err := l.rate.Wait(ctx); err != nil {
		// Wait fails early when the deadline cannot be met.
		return nil, tooMany()
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return nil, tooMany()
		}
		return nil, fmt.Errorf("%s: %w", l.name, ctx.Err())
	}
}

// limit makes fn wait for the limiter (429 after MaxWait) and hold a slot
// while it runs.
func (l *apiLimiter) limit(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, int, error) {
		release, err := l.wait(r.Context())
		if err != nil {
			return nil, 0, err
		}
		defer release()
		return fn(w, r)
	}
}
