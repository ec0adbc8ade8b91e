package policy

import (
	"context"
	"sync"

	"github.com/cilium/statedb"
)

// progress records the revisions of the input tables the controller has
// fully processed (computed and written), so that a caller that changed
// an input can wait until the engine has caught up with it.
type progress struct {
	mu      sync.Mutex
	revs    [4]statedb.Revision // policy-rules, identities, endpoints, ipcache
	changed chan struct{}       // closed and replaced on every update
}

func (p *progress) init() { p.changed = make(chan struct{}) }

func (p *progress) set(revs [4]statedb.Revision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revs = revs
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait returns once the controller has processed the given revisions of
// the policy-rules, identities, endpoints and ipcache tables.
func (p *progress) wait(ctx context.Context, revs [4]statedb.Revision) error {
	for {
		p.mu.Lock()
		done := true
		for i := range revs {
			done = done && p.revs[i] >= revs[i]
		}
		ch := p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
