package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// IPCacheSource is the Source of the ipcache rows the engine writes for
// the CIDR identities of rules.
const IPCacheSource = "cidr-policy"

// maxCIDRIdentities is how many local identities fit below the flag.
const maxCIDRIdentities = tables.LocalIdentityFlag - 1

// errCIDRExhausted is returned (wrapped) when every local identity is taken.
var errCIDRExhausted = errors.New("CIDR identities exhausted")

// cidrIdentities is the one owner of the CIDR identities of rules: which
// prefix has which node-local identity (the allocator), the ipcache and
// identities rows that publish them, and the file that keeps the numbers
// across restarts (cidrstate.go). The controller tells it which rules
// take and give up prefixes and which of its rows someone else deleted;
// it answers with the identities that appeared or went, for the selector
// cache, and writes what changed in the controller's write transaction.
type cidrIdentities struct {
	log           *slog.Logger
	ipcacheTbl    statedb.RWTable[*tables.IPCacheEntry]
	identitiesTbl statedb.RWTable[*tables.Identity]
	alloc         *cidrAllocator

	// dir keeps the numbers across restarts (nil: they are not kept).
	// saved is what its file holds; unsaved that the allocator may have
	// changed since; fileStale that the file must be rewritten anyway (it
	// could not be read in full).
	dir       *statedir.Dir
	saved     map[netip.Prefix]tables.NumericIdentity
	unsaved   bool
	fileStale bool

	// Work of the current round, kept across a failed write: the prefixes
	// whose rows must be checked, and the identities given up.
	sync     map[netip.Prefix]struct{}
	released map[netip.Prefix]tables.NumericIdentity

	// published is the prefix -> identity map after the last rule change,
	// for traces (read outside the controller's goroutine).
	published atomic.Pointer[map[netip.Prefix]tables.NumericIdentity]
}

func newCIDRIdentities(log *slog.Logger, ipcache statedb.RWTable[*tables.IPCacheEntry], identities statedb.RWTable[*tables.Identity]) *cidrIdentities {
	ci := &cidrIdentities{
		log: log, ipcacheTbl: ipcache, identitiesTbl: identities,
		alloc:    newCIDRAllocator(),
		saved:    map[netip.Prefix]tables.NumericIdentity{},
		unsaved:  true, // the first write drops the restored numbers no rule uses
		sync:     map[netip.Prefix]struct{}{},
		released: map[netip.Prefix]tables.NumericIdentity{},
	}
	empty := map[netip.Prefix]tables.NumericIdentity{}
	ci.published.Store(&empty)
	return ci
}

// take acquires the identities of a rule's prefixes and returns those
// that are new. A prefix that gets none is a problem of the rule.
func (ci *cidrIdentities) take(r *compiledRule) []*identityInfo {
	var added []*identityInfo
	for _, p := range r.prefixes {
		id, isNew, err := ci.alloc.acquire(p)
		if err != nil {
			r.problems = append(r.problems, err)
			continue
		}
		r.held = append(r.held, p)
		if isNew {
			ci.sync[p], ci.unsaved = struct{}{}, true
			delete(ci.released, p)
			added = append(added, cidrIdentity(id, p))
		}
	}
	return added
}

// give releases the identities a rule held and returns those that no
// rule uses any more.
func (ci *cidrIdentities) give(r *compiledRule) []tables.NumericIdentity {
	var gone []tables.NumericIdentity
	for _, p := range r.held {
		if id, last := ci.alloc.release(p); last {
			ci.sync[p], ci.unsaved = struct{}{}, true
			ci.released[p] = id
			gone = append(gone, id)
		}
	}
	return gone
}

// rulesApplied ends a batch of rule changes. The first batch has every
// restored rule: numbers restored for prefixes that none uses any more
// are free again.
func (ci *cidrIdentities) rulesApplied(changed bool) {
	ci.alloc.unreserve()
	if changed {
		m := ci.alloc.snapshot()
		ci.published.Store(&m)
	}
}

// identityRowChanged notices that someone else deleted the identities row
// of one of its identities: the row is written again.
func (ci *cidrIdentities) identityRowChanged(row *tables.Identity, deleted bool) {
	if p, ok := ci.alloc.used[row.ID]; ok && deleted {
		ci.sync[p] = struct{}{}
	}
}

// ipcacheRowChanged notices that someone else deleted the ipcache row of
// one of its prefixes (an endpoint row that had taken the prefix, then
// went): the row is written again.
func (ci *cidrIdentities) ipcacheRowChanged(row *tables.IPCacheEntry, deleted bool) {
	if !deleted {
		return
	}
	if _, ok := ci.alloc.lookup(row.Prefix); ok {
		ci.sync[row.Prefix] = struct{}{}
	}
}

// pending reports whether rows or the file need writing.
func (ci *cidrIdentities) pending() bool { return len(ci.sync) > 0 || ci.unsaved }

// prefixes returns the prefix -> identity map of the last rule change.
func (ci *cidrIdentities) prefixes() map[netip.Prefix]tables.NumericIdentity {
	return *ci.published.Load()
}

// count is the number of CIDR identities in use.
func (ci *cidrIdentities) count() int { return len(ci.alloc.byPrefix) }

// write brings the ipcache and identities rows of the prefixes allocated
// or released since the last write in step, in the controller's write
// transaction. The first write also checks the rows a previous
// controller left. Call written once the transaction is committed.
func (ci *cidrIdentities) write(wtxn statedb.WriteTxn, first bool) error {
	if first {
		for row := range ci.ipcacheTbl.All(wtxn) {
			if row.Source == IPCacheSource {
				ci.sync[row.Prefix] = struct{}{}
			}
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(ci.sync), comparePrefix) {
		id, allocated := ci.alloc.lookup(p)
		ipc, _, found := ci.ipcacheTbl.Get(wtxn, tables.IPCachePrefixIndex.Query(p))
		switch {
		case allocated && (!found || (ipc.Source == IPCacheSource && ipc.Identity != id)):
			row := &tables.IPCacheEntry{Prefix: p, Identity: id, Source: IPCacheSource, Status: reconciler.StatusPending()}
			if _, _, err := ci.ipcacheTbl.Insert(wtxn, row); err != nil {
				return fmt.Errorf("write the ipcache entry of %s: %w", p, err)
			}
		case !allocated && found && ipc.Source == IPCacheSource:
			if _, _, err := ci.ipcacheTbl.Delete(wtxn, ipc); err != nil {
				return fmt.Errorf("delete the ipcache entry of %s: %w", p, err)
			}
		}
		// found with another source: an endpoint holds the address; its
		// entry stands, and ours comes back when it goes.

		if old, ok := ci.released[p]; ok && !allocated {
			row, _, found := ci.identitiesTbl.Get(wtxn, tables.IdentityIDIndex.Query(old))
			if found && row.Labels.Equal(cidrLabels(p)) {
				if _, _, err := ci.identitiesTbl.Delete(wtxn, row); err != nil {
					return fmt.Errorf("unpublish CIDR identity %d (%s): %w", old, p, err)
				}
			}
		}
		if allocated {
			want := &tables.Identity{ID: id, Labels: cidrLabels(p)}
			row, _, found := ci.identitiesTbl.Get(wtxn, tables.IdentityIDIndex.Query(id))
			if !found || !row.Labels.Equal(want.Labels) || row.Reserved {
				if _, _, err := ci.identitiesTbl.Insert(wtxn, want); err != nil {
					return fmt.Errorf("publish CIDR identity %d (%s): %w", id, p, err)
				}
			}
		}
	}
	return nil
}

// written forgets the work of a round whose transaction was committed.
func (ci *cidrIdentities) written() {
	clear(ci.sync)
	clear(ci.released)
}

// cidrAllocator hands out the local identities of the prefixes rules use,
// LocalIdentityFlag | n with the lowest free n from 1, and counts the
// rules using each prefix: a prefix's identity goes when its last rule does.
//
// Numbers restored from the previous run are reserved for their prefix:
// the prefix gets its number back and no other prefix takes it until the
// reservations are dropped, so the kernel's ipcache (which outlives the
// agent) and the recomputed policies agree across a restart.
type cidrAllocator struct {
	byPrefix map[netip.Prefix]*cidrAllocation
	used     map[tables.NumericIdentity]netip.Prefix
	reserved map[netip.Prefix]tables.NumericIdentity // restored, not acquired yet
	// taken holds every n in use or reserved, sorted and distinct, so
	// the lowest free n is the first gap (found by binary search).
	taken []tables.NumericIdentity
}

type cidrAllocation struct {
	id   tables.NumericIdentity
	refs int
}

func newCIDRAllocator() *cidrAllocator {
	return &cidrAllocator{
		byPrefix: map[netip.Prefix]*cidrAllocation{},
		used:     map[tables.NumericIdentity]netip.Prefix{},
		reserved: map[netip.Prefix]tables.NumericIdentity{},
	}
}

// reserve keeps id for p: the next acquire of p returns it, and no other
// prefix gets it until unreserve.
func (a *cidrAllocator) reserve(p netip.Prefix, id tables.NumericIdentity) error {
	n := id &^ tables.LocalIdentityFlag
	switch {
	case !p.IsValid() || p != p.Masked() || p.Bits() == 0:
		return fmt.Errorf("prefix %s cannot have a CIDR identity", p)
	case id&tables.LocalIdentityFlag == 0 || n == 0 || n > maxCIDRIdentities:
		return fmt.Errorf("%d is not a local identity", id)
	}
	if _, ok := a.byPrefix[p]; ok || a.reserved[p] != 0 {
		return fmt.Errorf("%s already has an identity", p)
	}
	i, found := slices.BinarySearch(a.taken, n)
	if found {
		return fmt.Errorf("identity %d is already taken", id)
	}
	a.taken = slices.Insert(a.taken, i, n)
	a.reserved[p] = id
	return nil
}

// unreserve frees the numbers reserved for prefixes that were not
// acquired.
func (a *cidrAllocator) unreserve() {
	for _, id := range a.reserved {
		a.untake(id)
	}
	clear(a.reserved)
}

// acquire takes a reference on p's identity, allocating it if p had none
// (isNew).
func (a *cidrAllocator) acquire(p netip.Prefix) (id tables.NumericIdentity, isNew bool, err error) {
	if al := a.byPrefix[p]; al != nil {
		al.refs++
		return al.id, false, nil
	}
	if rid, ok := a.reserved[p]; ok {
		delete(a.reserved, p)
		id = rid
	} else {
		// The first i where taken[i] != i+1: n = i+1 is free and every
		// smaller number is taken.
		i := sort.Search(len(a.taken), func(i int) bool { return a.taken[i] != tables.NumericIdentity(i+1) })
		n := tables.NumericIdentity(i + 1)
		if n > maxCIDRIdentities {
			return 0, false, fmt.Errorf("allocate a CIDR identity for %s: %w: all %d are used by rules; use fewer distinct prefixes", p, errCIDRExhausted, maxCIDRIdentities)
		}
		a.taken = slices.Insert(a.taken, i, n)
		id = tables.LocalIdentityFlag | n
	}
	a.byPrefix[p] = &cidrAllocation{id: id, refs: 1}
	a.used[id] = p
	return id, true, nil
}

// release drops a reference on p's identity; gone reports that it was
// the last and the identity is free again.
func (a *cidrAllocator) release(p netip.Prefix) (id tables.NumericIdentity, gone bool) {
	al := a.byPrefix[p]
	if al == nil {
		return 0, false
	}
	if al.refs--; al.refs > 0 {
		return al.id, false
	}
	delete(a.byPrefix, p)
	delete(a.used, al.id)
	a.untake(al.id)
	return al.id, true
}

// untake makes id's number free again.
func (a *cidrAllocator) untake(id tables.NumericIdentity) {
	if i, found := slices.BinarySearch(a.taken, id&^tables.LocalIdentityFlag); found {
		a.taken = slices.Delete(a.taken, i, i+1)
	}
}

// lookup returns p's identity, if it has one.
func (a *cidrAllocator) lookup(p netip.Prefix) (tables.NumericIdentity, bool) {
	if al := a.byPrefix[p]; al != nil {
		return al.id, true
	}
	return 0, false
}

// snapshot returns every prefix and its identity.
func (a *cidrAllocator) snapshot() map[netip.Prefix]tables.NumericIdentity {
	out := make(map[netip.Prefix]tables.NumericIdentity, len(a.byPrefix))
	for p, al := range a.byPrefix {
		out[p] = al.id
	}
	return out
}
