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

func TestParseEndpointID(t *testing.T) {
	good := []string{"1", "4095", "container-id:abc", "cni-attachment-id:abc:eth0", "pod-name:default/web", "ipv4:10.0.0.1", "ipv6:fd00::1"}
	for _, id := range good {
		if _, err := ParseEndpointID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	bad := []string{"", "0", "4096", "-1", "x", "container-id:", "cni-attachment-id:abc", "pod-name:web", "ipv4:fd00::1", "ipv6:10.0.0.1", "nope:1"}
	for _, id := range bad {
		if _, err := ParseEndpointID(id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%q: got %v, want ErrInvalidID", id, err)
		}
	}
}
