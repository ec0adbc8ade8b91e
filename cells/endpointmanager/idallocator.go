package endpointmanager

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// Endpoint IDs are node-unique numbers in [MinEndpointID, MaxEndpointID],
// small enough for the datapath to use as map keys.
const (
	MinEndpointID = 1
	MaxEndpointID = 4095
)

// ErrNoFreeID is returned when every endpoint ID is taken.
var ErrNoFreeID = errors.New("no free endpoint ID: 4095 endpoints exist on this node")

// idAllocator hands out endpoint IDs. It picks a random free ID rather than
// the lowest, so an ID released by a deleted endpoint is unlikely to be
// handed to the next pod while something (a monitor, an operator's shell
// history) still refers to the old one.
type idAllocator struct {
	mu    sync.Mutex
	inUse map[uint16]struct{}
}

func newIDAllocator() *idAllocator { return &idAllocator{inUse: map[uint16]struct{}{}} }

// allocate returns a free ID and marks it used.
func (a *idAllocator) allocate() (uint16, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := MaxEndpointID - MinEndpointID + 1
	if len(a.inUse) >= n {
		return 0, ErrNoFreeID
	}
	// Random probes find a free ID fast while the space is sparse; a linear
	// scan from a random start bounds the worst case when it is nearly full.
	for range 32 {
		id := uint16(MinEndpointID + rand.IntN(n))
		if _, used := a.inUse[id]; !used {
			a.inUse[id] = struct{}{}
			return id, nil
		}
	}
	start := rand.IntN(n)
	for i := range n {
		id := uint16(MinEndpointID + (start+i)%n)
		if _, used := a.inUse[id]; !used {
			a.inUse[id] = struct{}{}
			return id, nil
		}
	}
	return 0, ErrNoFreeID
}

// reuse marks a specific ID used (a restored endpoint keeps its ID). It
// reports false if the ID is out of range or taken.
func (a *idAllocator) reuse(id uint16) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id < MinEndpointID || id > MaxEndpointID {
		return false
	}
	if _, used := a.inUse[id]; used {
		return false
	}
	a.inUse[id] = struct{}{}
	return true
}

// release frees an ID.
func (a *idAllocator) release(id uint16) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inUse, id)
}
