package policy

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/membrane-net/membrane/statedb/tables"
)

const localID = tables.LocalIdentityFlag

func mustAcquire(t *testing.T, a *cidrAllocator, prefix string, want tables.NumericIdentity) {
	t.Helper()
	id, _, err := a.acquire(netip.MustParsePrefix(prefix))
	if err != nil {
		t.Fatalf("acquire %s: %v", prefix, err)
	}
	if id != want {
		t.Fatalf("acquire %s: got %d, want %d", prefix, id&^localID, want&^localID)
	}
}

func TestCIDRAllocatorLowestFree(t *testing.T) {
	a := newCIDRAllocator()
	mustAcquire(t, a, "10.0.0.0/8", localID|1)
	mustAcquire(t, a, "10.1.0.0/16", localID|2)
	mustAcquire(t, a, "10.2.0.0/16", localID|3)
	mustAcquire(t, a, "10.0.0.0/8", localID|1) // a second reference

	if _, gone := a.release(netip.MustParsePrefix("10.1.0.0/16")); !gone {
		t.Fatal("last reference released, identity not gone")
	}
	if _, gone := a.release(netip.MustParsePrefix("10.0.0.0/8")); gone {
		t.Fatal("identity gone while a reference is left")
	}
	// 2 is the lowest free number again, then numbering continues after 3.
	mustAcquire(t, a, "192.0.2.0/24", localID|2)
	mustAcquire(t, a, "198.51.100.0/24", localID|4)
}

func TestCIDRAllocatorReservations(t *testing.T) {
	a := newCIDRAllocator()
	restored := map[string]tables.NumericIdentity{"10.2.0.0/16": localID | 1, "10.1.0.0/16": localID | 3, "10.9.0.0/16": localID | 5}
	for p, id := range restored {
		if err := a.reserve(netip.MustParsePrefix(p), id); err != nil {
			t.Fatalf("reserve %s: %v", p, err)
		}
	}
	// Restored prefixes get their number whatever the order; fresh ones
	// skip the reserved numbers.
	mustAcquire(t, a, "10.1.0.0/16", localID|3)
	mustAcquire(t, a, "172.16.0.0/12", localID|2)
	mustAcquire(t, a, "192.0.2.0/24", localID|4)
	mustAcquire(t, a, "10.2.0.0/16", localID|1)
	mustAcquire(t, a, "198.51.100.0/24", localID|6)

	// 5 was not claimed: dropping the reservations frees it.
	a.unreserve()
	mustAcquire(t, a, "203.0.113.0/24", localID|5)
	mustAcquire(t, a, "10.9.0.0/16", localID|7)

	// A restored number, released, is free like any other.
	a.release(netip.MustParsePrefix("10.1.0.0/16"))
	mustAcquire(t, a, "fd00::/64", localID|3)
}

func TestCIDRAllocatorReserveRejects(t *testing.T) {
	a := newCIDRAllocator()
	p := netip.MustParsePrefix
	if err := a.reserve(p("10.0.0.0/8"), localID|1); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, a, "10.1.0.0/16", localID|2)
	for _, tc := range []struct {
		prefix netip.Prefix
		id     tables.NumericIdentity
	}{
		{p("10.2.0.0/16"), localID | 1},     // number reserved for another prefix
		{p("10.3.0.0/16"), localID | 2},     // number in use
		{p("10.0.0.0/8"), localID | 9},      // prefix already reserved
		{p("10.1.0.0/16"), localID | 9},     // prefix already allocated
		{p("10.4.0.0/16"), 256},             // not a local identity
		{p("10.4.0.0/16"), localID},         // n = 0
		{p("10.4.0.1/16"), localID | 9},     // not masked
		{p("0.0.0.0/0"), localID | 9},       // /0 is world, no identity
		{netip.Prefix{}, localID | 9},       // zero
		{p("10.4.0.0/16"), localID | 1<<25}, // beyond the local range
	} {
		if err := a.reserve(tc.prefix, tc.id); err == nil {
			t.Errorf("reserve(%s, %d) accepted", tc.prefix, tc.id)
		}
	}
	// Nothing rejected was taken.
	mustAcquire(t, a, "10.5.0.0/16", localID|3)
}

func TestCIDRAllocatorExhausted(t *testing.T) {
	a := newCIDRAllocator()
	a.taken = make([]tables.NumericIdentity, maxCIDRIdentities-1)
	for i := range a.taken {
		a.taken[i] = tables.NumericIdentity(i + 1)
	}
	mustAcquire(t, a, "10.0.0.0/8", localID|maxCIDRIdentities)
	if _, _, err := a.acquire(netip.MustParsePrefix("10.1.0.0/16")); !errors.Is(err, errCIDRExhausted) {
		t.Fatalf("acquire with every number taken: %v", err)
	}
}
