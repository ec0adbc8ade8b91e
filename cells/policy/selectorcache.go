package policy

import (
	"maps"
	"slices"

	"github.com/membrane-net/membrane/statedb/tables"
)

// selectorCache knows, for every peer selector some rule uses, the
// identities it currently selects. It is updated incrementally: an
// identity appearing or going is matched against every selector once,
// a selector appearing is matched against every identity once, and each
// update says which selectors' selections changed, so that only the
// endpoint identities depending on those are recomputed.
//
// Selectors are reference counted by the rules that use them: two rules
// with the same selector (same key) share one entry.
type selectorCache struct {
	identities map[tables.NumericIdentity]*identityInfo
	selectors  map[string]*cachedSelector
}

type cachedSelector struct {
	sel      identitySelector
	refs     int
	selected map[tables.NumericIdentity]struct{}
	sorted   []tables.NumericIdentity // nil when stale
}

func newSelectorCache() *selectorCache {
	return &selectorCache{
		identities: map[tables.NumericIdentity]*identityInfo{},
		selectors:  map[string]*cachedSelector{},
	}
}

// identity returns a known identity.
func (c *selectorCache) identity(id tables.NumericIdentity) (*identityInfo, bool) {
	info, ok := c.identities[id]
	return info, ok
}

// upsertIdentity adds or replaces an identity and returns the keys of the
// selectors whose selection changed.
func (c *selectorCache) upsertIdentity(info *identityInfo) []string {
	if old, ok := c.identities[info.id]; ok && old.same(info) {
		return nil
	}
	c.identities[info.id] = info
	var changed []string
	for k, cs := range c.selectors {
		_, had := cs.selected[info.id]
		if has := cs.sel.matches(info); has != had {
			cs.set(info.id, has)
			changed = append(changed, k)
		}
	}
	return changed
}

// removeIdentity forgets an identity and returns the keys of the
// selectors that selected it.
func (c *selectorCache) removeIdentity(id tables.NumericIdentity) []string {
	if _, ok := c.identities[id]; !ok {
		return nil
	}
	delete(c.identities, id)
	var changed []string
	for k, cs := range c.selectors {
		if _, had := cs.selected[id]; had {
			cs.set(id, false)
			changed = append(changed, k)
		}
	}
	return changed
}

// addSelector takes a reference on a selector, matching it against every
// known identity if it is new.
func (c *selectorCache) addSelector(sel identitySelector) {
	if cs, ok := c.selectors[sel.key()]; ok {
		cs.refs++
		return
	}
	cs := &cachedSelector{sel: sel, refs: 1, selected: map[tables.NumericIdentity]struct{}{}}
	for id, info := range c.identities {
		if sel.matches(info) {
			cs.selected[id] = struct{}{}
		}
	}
	c.selectors[sel.key()] = cs
}

// releaseSelector drops a reference; the last one removes the selector.
func (c *selectorCache) releaseSelector(key string) {
	cs, ok := c.selectors[key]
	if !ok {
		return
	}
	if cs.refs--; cs.refs <= 0 {
		delete(c.selectors, key)
	}
}

// selected returns the identities a selector selects, sorted. The slice
// is shared: callers must not modify it.
func (c *selectorCache) selected(key string) []tables.NumericIdentity {
	cs, ok := c.selectors[key]
	if !ok {
		return nil
	}
	if cs.sorted == nil {
		cs.sorted = slices.Sorted(maps.Keys(cs.selected))
		if cs.sorted == nil {
			cs.sorted = []tables.NumericIdentity{}
		}
	}
	return cs.sorted
}

func (cs *cachedSelector) set(id tables.NumericIdentity, selected bool) {
	if selected {
		cs.selected[id] = struct{}{}
	} else {
		delete(cs.selected, id)
	}
	cs.sorted = nil
}
