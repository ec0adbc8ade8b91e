package e2eutil

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Eventually polls cond until it returns nil, failing the test with what
// and cond's last error if within passes first. It is for state that
// converges (reconcilers, a CRI reporting ready), not a timing assertion:
// the bound is generous and only there so that a broken agent cannot hang
// the suite.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Poll(within, what, cond); err != nil {
		tb.Fatal(err)
	}
}

// Poll is Eventually returning the error instead of failing the test,
// for a caller that can go on without (a benchmark's optional mode).
func Poll(within time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still not true after %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Context bounds an API call at 30 s; it is cancelled when the test ends.
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
