package endpointmanager

import (
	"errors"
	"testing"
)

func TestIDAllocatorUniqueAndBounded(t *testing.T) {
	a := newIDAllocator()
	seen := map[uint16]bool{}
	for range MaxEndpointID {
		id, err := a.allocate()
		if err != nil {
			t.Fatalf("after %d IDs: %v", len(seen), err)
		}
		if id < MinEndpointID || id > MaxEndpointID {
			t.Fatalf("ID %d out of range", id)
		}
		if seen[id] {
			t.Fatalf("ID %d handed out twice", id)
		}
		seen[id] = true
	}
	if _, err := a.allocate(); !errors.Is(err, ErrNoFreeID) {
		t.Fatalf("full allocator: got %v, want ErrNoFreeID", err)
	}
	a.release(77)
	if id, err := a.allocate(); err != nil || id != 77 {
		t.Fatalf("after releasing 77 got %d, %v", id, err)
	}
}

func TestIDAllocatorReuse(t *testing.T) {
	a := newIDAllocator()
	if !a.reuse(9) {
		t.Fatal("reuse of a free ID refused")
	}
	if a.reuse(9) {
		t.Fatal("reuse of a taken ID allowed")
	}
	if a.reuse(0) || a.reuse(MaxEndpointID+1) {
		t.Fatal("reuse of an out-of-range ID allowed")
	}
}
