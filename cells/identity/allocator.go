package identity

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ErrExhausted is returned (wrapped) by Allocate when every cluster identity
// is in use.
var ErrExhausted = errors.New("identity range exhausted")

// errNotSaved marks failures to persist: nothing in the tables will fix
// them, so the controller retries them on a timer.
var errNotSaved = errors.New("identity state not saved")

// ReservedIdentities returns the identities the agent defines itself
// (tables.ReservedIdentities), labelled reserved:NAME, sorted by number.
func ReservedIdentities() []*tables.Identity {
	out := make([]*tables.Identity, 0, len(tables.ReservedIdentities))
	for _, id := range slices.Sorted(maps.Keys(tables.ReservedIdentities)) {
		out = append(out, &tables.Identity{
			ID:       id,
			Labels:   labels.New(labels.Label{Source: labels.SourceReserved, Key: tables.ReservedIdentities[id]}),
			Reserved: true,
		})
	}
	return out
}

// Allocator maps security label sets to numeric identities: the same labels
// always get the same number, different labels different numbers. It knows
// the reserved identities and hands out cluster identities from [min, max],
// persisting every change through its Store before reporting it, so the
// numbers survive a restart.
//
// Which free number it picks: the first free one at or after the number
// following the last allocation, wrapping around at max (next fit). A
// released number is therefore not handed out again until the whole range
// has been cycled through, so a number still found in a stale place (a BPF
// map entry not yet reconciled, a monitor event, a log line, another node's
// cache) does not silently start to mean other labels. Lowest-free would
// reuse it at once.
//
// The Allocator does not know who uses an identity: the controller derives
// that from the endpoints table and calls Release. It is safe for
// concurrent use.
type Allocator struct {
	mu       sync.Mutex
	store    Store
	min, max tables.NumericIdentity
	next     tables.NumericIdentity
	byID     map[tables.NumericIdentity]*tables.Identity
	byLabels map[string]*tables.Identity
}

// OpenAllocator loads the allocator's state from store. A state that does
// not fit (a number outside [min, max], invalid or duplicate labels) is an
// error naming the identity, never silently dropped.
func OpenAllocator(store Store, min, max tables.NumericIdentity) (*Allocator, error) {
	if min <= tables.IdentityWorldIPv6 || min > max {
		return nil, fmt.Errorf("identity range %d..%d: must be above the reserved identities (1..%d) and not empty", min, max, tables.IdentityWorldIPv6)
	}
	a := &Allocator{
		store: store, min: min, max: max, next: min,
		byID:     map[tables.NumericIdentity]*tables.Identity{},
		byLabels: map[string]*tables.Identity{},
	}
	for _, r := range ReservedIdentities() {
		a.byID[r.ID], a.byLabels[r.Labels.String()] = r, r
	}
	st, found, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("load identities: %w", err)
	}
	if !found {
		return a, nil
	}
	for _, si := range st.Identities {
		if err := a.load(si); err != nil {
			from := ""
			if loc := location(store); loc != "" {
				from = " from " + loc
			}
			return nil, fmt.Errorf("load identities%s: identity %d: %w (fix or move the file away to start afresh)", from, si.ID, err)
		}
	}
	if st.Next >= min && st.Next <= max {
		a.next = st.Next
	}
	return a, nil
}

// location is where s keeps the state, if it says.
func location(s Store) string {
	if w, ok := s.(interface{ Where() string }); ok {
		return w.Where()
	}
	return ""
}

func (a *Allocator) load(si StoredIdentity) error {
	if si.ID < a.min || si.ID > a.max {
		return fmt.Errorf("outside the cluster identity range %d..%d", a.min, a.max)
	}
	ls, err := labels.ParseList(si.Labels, "")
	if err != nil {
		return err
	}
	if len(ls) != len(si.Labels) {
		return fmt.Errorf("labels %q repeat a source:key", si.Labels)
	}
	if other := a.byID[si.ID]; other != nil {
		return fmt.Errorf("listed twice")
	}
	if other := a.byLabels[ls.String()]; other != nil {
		return fmt.Errorf("labels %q already belong to identity %d", ls, other.ID)
	}
	ident := &tables.Identity{ID: si.ID, Labels: ls}
	a.byID[si.ID], a.byLabels[ls.String()] = ident, ident
	return nil
}

// Allocate returns the identity of the security labels ls, allocating
// (and persisting) a new one if they have none yet; isNew tells which. The
// labels of a reserved identity give the reserved identity.
func (a *Allocator) Allocate(ls labels.Labels) (ident *tables.Identity, isNew bool, err error) {
	return a.allocate(ls, tables.IdentityUnknown)
}

// Restore is Allocate for labels that held identity id before a restart
// (a restored endpoint carries it): if ls have no identity yet and id is a
// free cluster identity, ls get id again. Otherwise it is Allocate: labels
// that already have an identity keep theirs.
func (a *Allocator) Restore(ls labels.Labels, id tables.NumericIdentity) (ident *tables.Identity, isNew bool, err error) {
	return a.allocate(ls, id)
}

func (a *Allocator) allocate(ls labels.Labels, want tables.NumericIdentity) (*tables.Identity, bool, error) {
	if err := ls.Validate(); err != nil {
		return nil, false, fmt.Errorf("allocate identity: %w", err)
	}
	key := ls.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if ident := a.byLabels[key]; ident != nil {
		return copyOf(ident), false, nil
	}
	id, moveNext := want, false
	if id < a.min || id > a.max || a.byID[id] != nil {
		var ok bool
		if id, ok = a.findFree(); !ok {
			return nil, false, fmt.Errorf("allocate identity for labels %q: %w: all %d cluster identities (%d..%d) are in use; fewer distinct security label sets are needed (e.g. drop per-pod labels with --identity-label-filter)",
				key, ErrExhausted, a.max-a.min+1, a.min, a.max)
		}
		moveNext = true
	}
	ident := &tables.Identity{ID: id, Labels: slices.Clone(ls)}
	a.byID[id], a.byLabels[key] = ident, ident
	prevNext := a.next
	if moveNext {
		a.next = a.after(id)
	}
	if err := a.save(); err != nil {
		delete(a.byID, id)
		delete(a.byLabels, key)
		a.next = prevNext
		return nil, false, fmt.Errorf("allocate identity %d for labels %q: %w: %w", id, key, errNotSaved, err)
	}
	return copyOf(ident), true, nil
}

// findFree returns the first free number at or after a.next, wrapping.
func (a *Allocator) findFree() (tables.NumericIdentity, bool) {
	id := a.next
	for range uint64(a.max-a.min) + 1 {
		if a.byID[id] == nil {
			return id, true
		}
		id = a.after(id)
	}
	return 0, false
}

func (a *Allocator) after(id tables.NumericIdentity) tables.NumericIdentity {
	if id >= a.max {
		return a.min
	}
	return id + 1
}

// Release forgets the given cluster identities (reserved and unknown
// numbers are ignored) and persists the result once. It returns the numbers
// it released; on error nothing is released.
func (a *Allocator) Release(ids ...tables.NumericIdentity) ([]tables.NumericIdentity, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var gone []*tables.Identity
	for _, id := range ids {
		ident := a.byID[id]
		if ident == nil || ident.Reserved {
			continue
		}
		delete(a.byID, id)
		delete(a.byLabels, ident.Labels.String())
		gone = append(gone, ident)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	if err := a.save(); err != nil {
		for _, ident := range gone {
			a.byID[ident.ID], a.byLabels[ident.Labels.String()] = ident, ident
		}
		return nil, fmt.Errorf("release identities: %w: %w", errNotSaved, err)
	}
	out := make([]tables.NumericIdentity, len(gone))
	for i, ident := range gone {
		out[i] = ident.ID
	}
	return out, nil
}

// Lookup returns the identity of ls, if they have one.
func (a *Allocator) Lookup(ls labels.Labels) (*tables.Identity, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ident := a.byLabels[ls.String()]
	return copyOf(ident), ident != nil
}

// Get returns identity id, if it exists.
func (a *Allocator) Get(id tables.NumericIdentity) (*tables.Identity, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ident := a.byID[id]
	return copyOf(ident), ident != nil
}

// Identities returns every identity, reserved ones included, by number.
func (a *Allocator) Identities() []*tables.Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*tables.Identity, 0, len(a.byID))
	for _, ident := range a.byID {
		out = append(out, copyOf(ident))
	}
	slices.SortFunc(out, func(x, y *tables.Identity) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

// save persists the cluster identities; a.mu is held.
func (a *Allocator) save() error {
	st := State{Version: stateVersion, Next: a.next, Identities: []StoredIdentity{}}
	for _, id := range slices.Sorted(maps.Keys(a.byID)) {
		if ident := a.byID[id]; !ident.Reserved {
			st.Identities = append(st.Identities, StoredIdentity{ID: id, Labels: ident.Labels.Strings()})
		}
	}
	return a.store.Save(st)
}

// copyOf returns a fresh row for the identities table: rows are immutable
// once inserted and must not be shared with the allocator's own state.
func copyOf(ident *tables.Identity) *tables.Identity {
	if ident == nil {
		return nil
	}
	c := *ident
	return &c
}
