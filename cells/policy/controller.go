package policy

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/statedb/tables"
)

// retryInterval is how long the controller waits before writing again
// after a write to the tables failed.
const retryInterval = time.Second

// controller is the reactive part of the cell. It follows the
// policy-rules, identities and endpoints tables and keeps the
// endpoint-policy table (and the ipcache and identities rows of CIDR
// peers) in step, recomputing only what a change can affect:
//
//   - an identity appearing or going changes the selections of the
//     selectors that match it: identities whose policy used one of those
//     selectors are recomputed;
//   - a rule added, changed or removed: identities it selects (before or
//     after) are recomputed;
//   - an endpoint that appears or changes identity gets the policy of its
//     identity (computed once per identity, shared by its endpoints).
//
// Rows are written only when what they ask of the datapath, or the
// policy revision, changed.
type controller struct {
	log *slog.Logger
	cfg Config
	db  *statedb.DB

	rulesTbl      statedb.Table[*tables.PolicyRule]
	revisionTbl   statedb.Table[*tables.PolicyRevision]
	identitiesTbl statedb.RWTable[*tables.Identity]
	endpointsTbl  statedb.Table[*tables.Endpoint]
	ipcacheTbl    statedb.RWTable[*tables.IPCacheEntry]
	policyTbl     statedb.RWTable[*tables.EndpointPolicy]

	policyInit, ipcacheInit func(statedb.WriteTxn)
	initialized             bool
	firstRound              bool

	cache *selectorCache
	cidr  *cidrIdentities // the CIDR identities of the rules, and their rows
	rules map[string]*compiledRule

	// revision is the policy revision of the rules computed from (see
	// policyRevision); ruleRevision the highest revision of the rules
	// seen, which stands for it while the policy-revision table is empty.
	revision     uint64
	ruleRevision uint64

	endpoints  map[uint16]tables.NumericIdentity // endpoints that want a row
	byIdentity map[tables.NumericIdentity]map[uint16]struct{}
	policies   map[tables.NumericIdentity]*identityPolicy
	dependents map[string]map[tables.NumericIdentity]struct{} // selector -> identities whose policy used it

	// Work of the current round (kept across a failed write).
	dirtyIdentities map[tables.NumericIdentity]struct{}
	dirtyEndpoints  map[uint16]struct{}
	allEndpoints    bool

	// seen holds, per input table, the revision of the last change
	// processed. It is not the revision of the round's read transaction:
	// a change iterator can return nothing for a commit that the
	// transaction already sees but whose watch channels are not closed
	// yet; that change comes in the next round.
	seen [4]statedb.Revision
	// progress tells waiters which table revisions have been processed.
	progress progress
}

func newController(log *slog.Logger, cfg Config, db *statedb.DB, rules statedb.Table[*tables.PolicyRule],
	revision statedb.Table[*tables.PolicyRevision], identities statedb.RWTable[*tables.Identity],
	endpoints statedb.Table[*tables.Endpoint], ipcache statedb.RWTable[*tables.IPCacheEntry],
	policy statedb.RWTable[*tables.EndpointPolicy]) *controller {
	c := &controller{
		log: log, cfg: cfg, db: db,
		rulesTbl: rules, revisionTbl: revision, identitiesTbl: identities, endpointsTbl: endpoints, ipcacheTbl: ipcache, policyTbl: policy,
		cache:           newSelectorCache(),
		cidr:            newCIDRIdentities(log, ipcache, identities),
		rules:           map[string]*compiledRule{},
		endpoints:       map[uint16]tables.NumericIdentity{},
		byIdentity:      map[tables.NumericIdentity]map[uint16]struct{}{},
		policies:        map[tables.NumericIdentity]*identityPolicy{},
		dependents:      map[string]map[tables.NumericIdentity]struct{}{},
		dirtyIdentities: map[tables.NumericIdentity]struct{}{},
		dirtyEndpoints:  map[uint16]struct{}{},
		firstRound:      true,
	}
	c.progress.init()
	// endpoint-policy is initialized once every endpoint has its policy
	// computed from all the restored rules; ipcache waits for the CIDR
	// rows, so that pruning the kernel maps never drops them in between.
	wtxn := db.WriteTxn(policy, ipcache)
	c.policyInit = policy.RegisterInitializer(wtxn, "policy-engine")
	c.ipcacheInit = ipcache.RegisterInitializer(wtxn, "policy-engine-cidr")
	wtxn.Commit()
	return c
}

func (c *controller) run(ctx context.Context, health cell.Health) error {
	wtxn := c.db.WriteTxn(c.rulesTbl, c.identitiesTbl, c.endpointsTbl, c.ipcacheTbl)
	ruleChanges, err1 := c.rulesTbl.Changes(wtxn)
	identChanges, err2 := c.identitiesTbl.Changes(wtxn)
	epChanges, err3 := c.endpointsTbl.Changes(wtxn)
	ipcChanges, err4 := c.ipcacheTbl.Changes(wtxn)
	// The first changes returned are the whole tables as of this
	// transaction, so everything up to its revisions will be seen.
	c.seen = c.inputRevisions(wtxn)
	wtxn.Commit()
	for _, it := range []interface{ Close() }{ruleChanges, identChanges, epChanges, ipcChanges} {
		if it != nil {
			defer it.Close()
		}
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		health.Degraded("cannot watch the tables", err)
		return fmt.Errorf("policy engine: watch tables: %w", err)
	}
	c.cidr.restore()
	if !c.waitInitialized(ctx) {
		return nil
	}
	return c.loop(ctx, health, ruleChanges, identChanges, epChanges, ipcChanges)
}

// waitInitialized waits until the policy rules are restored and the
// identities loaded: computing from half the rules would open (or close)
// the datapath for a moment after every restart.
func (c *controller) waitInitialized(ctx context.Context) bool {
	for {
		txn := c.db.ReadTxn()
		rOK, rWatch := c.rulesTbl.Initialized(txn)
		iOK, iWatch := c.identitiesTbl.Initialized(txn)
		if rOK && iOK {
			return true
		}
		var pending []string
		if !rOK {
			pending = append(pending, "policy-rules ("+strings.Join(c.rulesTbl.PendingInitializers(txn), ", ")+")")
		} else {
			rWatch = nil
		}
		if !iOK {
			pending = append(pending, "identities ("+strings.Join(c.identitiesTbl.PendingInitializers(txn), ", ")+")")
		} else {
			iWatch = nil
		}
		c.log.Debug("Waiting for tables to be initialized", "tables", pending)
		select {
		case <-ctx.Done():
			return false
		case <-rWatch:
		case <-iWatch:
		}
	}
}

func (c *controller) loop(ctx context.Context, health cell.Health,
	ruleChanges statedb.ChangeIterator[*tables.PolicyRule], identChanges statedb.ChangeIterator[*tables.Identity],
	epChanges statedb.ChangeIterator[*tables.Endpoint], ipcChanges statedb.ChangeIterator[*tables.IPCacheEntry]) error {
	var retry <-chan time.Time
	for {
		txn := c.db.ReadTxn()
		identSeq, identWatch := identChanges.Next(txn)
		ruleSeq, ruleWatch := ruleChanges.Next(txn)
		epSeq, epWatch := epChanges.Next(txn)
		ipcSeq, ipcWatch := ipcChanges.Next(txn)

		for ch, rev := range identSeq {
			c.seen[identitiesInput] = max(c.seen[identitiesInput], rev)
			c.identityChanged(ch.Object, ch.Deleted)
		}
		c.rulesChanged(ruleSeq)
		revRow, revWatch := tables.CurrentPolicyRevision(c.revisionTbl, txn)
		if rev := c.policyRevision(revRow); rev != c.revision {
			c.revision, c.allEndpoints = rev, true
		}
		for ch, rev := range epSeq {
			c.seen[endpointsInput] = max(c.seen[endpointsInput], rev)
			c.endpointChanged(ch.Object, ch.Deleted)
		}
		for ch, rev := range ipcSeq {
			c.seen[ipcacheInput] = max(c.seen[ipcacheInput], rev)
			c.cidr.ipcacheRowChanged(ch.Object, ch.Deleted)
		}
		c.recompute()

		epInit, epInitWatch := c.endpointsTbl.Initialized(txn)
		writeErr := c.write(epInit)
		// Health first: whoever waits for the progress then reads the
		// health of what it waited for.
		c.reportHealth(health, writeErr)
		if writeErr == nil {
			c.progress.set(c.seen)
			retry = nil
		} else if retry == nil {
			retry = time.After(retryInterval)
		}
		if c.initialized {
			epInitWatch = nil
		}

		select {
		case <-ctx.Done():
			return nil
		case <-identWatch:
		case <-ruleWatch:
		case <-epWatch:
		case <-ipcWatch:
		case <-revWatch:
		case <-epInitWatch:
		case <-retry:
			retry = nil
		}
	}
}

// identityChanged updates the selector cache. CIDR identities are the
// engine's own: their rows are only published for operators, and one
// deleted by someone else is published again.
func (c *controller) identityChanged(row *tables.Identity, deleted bool) {
	if kindOf(row.ID) == kindCIDR {
		c.cidr.identityRowChanged(row, deleted)
		return
	}
	var changed []string
	if deleted {
		changed = c.cache.removeIdentity(row.ID)
		c.identityUpdated(row.ID)
	} else {
		info := identityFromRow(row)
		if old, ok := c.cache.identity(row.ID); !ok || !old.same(info) {
			c.identityUpdated(row.ID)
		}
		changed = c.cache.upsertIdentity(info)
	}
	c.selectionsChanged(changed)
}

// identityUpdated marks an identity whose labels appeared, changed or
// went: its endpoints need their policy recomputed.
func (c *controller) identityUpdated(id tables.NumericIdentity) {
	if len(c.byIdentity[id]) > 0 {
		c.dirtyIdentities[id] = struct{}{}
	}
}

// selectionsChanged marks the identities whose policy used one of the
// selectors.
func (c *controller) selectionsChanged(keys []string) {
	for _, k := range keys {
		for id := range c.dependents[k] {
			c.dirtyIdentities[id] = struct{}{}
		}
	}
}

// rulesChanged applies a batch of rule changes: additions first, so a
// prefix that moves from one rule to another keeps its identity.
func (c *controller) rulesChanged(seq iter.Seq2[statedb.Change[*tables.PolicyRule], statedb.Revision]) {
	var added, removed []*compiledRule
	for ch, rev := range seq {
		c.seen[rulesInput] = max(c.seen[rulesInput], rev)
		key := ch.Object.Key
		if old := c.rules[key]; old != nil {
			removed = append(removed, old)
			delete(c.rules, key)
		}
		if ch.Deleted {
			continue
		}
		r := compileRule(ch.Object)
		c.rules[key] = r
		added = append(added, r)
		c.ruleRevision = max(c.ruleRevision, ch.Object.Revision)
	}
	for _, r := range added {
		for _, info := range c.cidr.take(r) {
			c.selectionsChanged(c.cache.upsertIdentity(info))
		}
		for _, sel := range r.selectors {
			c.cache.addSelector(sel)
		}
		c.subjectsChanged(r)
		for _, err := range r.problems {
			c.log.Warn("Part of a policy rule cannot be enforced", "rule", r.key, "error", err)
		}
	}
	for _, r := range removed {
		for k := range r.selectors {
			c.cache.releaseSelector(k)
		}
		for _, id := range c.cidr.give(r) {
			c.selectionsChanged(c.cache.removeIdentity(id))
		}
		c.subjectsChanged(r)
	}
	c.cidr.rulesApplied(len(added)+len(removed) > 0)
}

// policyRevision is the policy revision of the rules processed so far,
// given the policy-revision row the round's transaction sees. The
// repository writes that row in the transaction that writes the rules,
// with the rules table's revision after them (RulesRevision). The row
// can be ahead of the rules processed: the change iterator may return a
// commit a round after the transaction sees it (see seen). So the row's
// revision applies only once the changes up to RulesRevision are
// processed; until then the rules are still those of the revision held.
// Without a row (no repository) it is the highest revision of the rules
// seen.
func (c *controller) policyRevision(row *tables.PolicyRevision) uint64 {
	switch {
	case row == nil:
		return c.ruleRevision
	case row.RulesRevision <= c.seen[rulesInput]:
		return row.Revision
	}
	return c.revision
}

// subjectsChanged marks the endpoint identities a rule selects.
func (c *controller) subjectsChanged(r *compiledRule) {
	if r.subject == nil {
		return
	}
	for id := range c.byIdentity {
		if info, ok := c.cache.identity(id); ok && r.selects(info.labels) {
			c.dirtyIdentities[id] = struct{}{}
		}
	}
}

// endpointChanged follows an endpoint's identity and whether it wants a
// row; anything else about endpoints is none of the engine's business.
func (c *controller) endpointChanged(ep *tables.Endpoint, deleted bool) {
	oldID, had := c.endpoints[ep.ID]
	want := !deleted && wantsPolicy(ep)
	if had && want && oldID == ep.Identity {
		return
	}
	if had {
		delete(c.endpoints, ep.ID)
		eps := c.byIdentity[oldID]
		delete(eps, ep.ID)
		if len(eps) == 0 {
			delete(c.byIdentity, oldID)
			c.setPolicy(oldID, nil)
		}
	}
	if want {
		c.endpoints[ep.ID] = ep.Identity
		eps := c.byIdentity[ep.Identity]
		if eps == nil {
			eps = map[uint16]struct{}{}
			c.byIdentity[ep.Identity] = eps
		}
		eps[ep.ID] = struct{}{}
		if c.policies[ep.Identity] == nil {
			c.dirtyIdentities[ep.Identity] = struct{}{}
		}
	}
	c.dirtyEndpoints[ep.ID] = struct{}{}
}

// setPolicy records an identity's computed policy (nil: none) and the
// selectors it depends on.
func (c *controller) setPolicy(id tables.NumericIdentity, p *identityPolicy) {
	if old := c.policies[id]; old != nil {
		for _, k := range old.deps {
			if ids := c.dependents[k]; ids != nil {
				delete(ids, id)
				if len(ids) == 0 {
					delete(c.dependents, k)
				}
			}
		}
	}
	if p == nil {
		delete(c.policies, id)
		return
	}
	c.policies[id] = p
	for _, k := range p.deps {
		ids := c.dependents[k]
		if ids == nil {
			ids = map[tables.NumericIdentity]struct{}{}
			c.dependents[k] = ids
		}
		ids[id] = struct{}{}
	}
}

// recompute computes the policy of every dirty identity that endpoints
// use, and marks their endpoints if the result changed.
func (c *controller) recompute() {
	for id := range c.dirtyIdentities {
		delete(c.dirtyIdentities, id)
		eps := c.byIdentity[id]
		if len(eps) == 0 {
			continue
		}
		var p *identityPolicy
		if info, ok := c.cache.identity(id); ok && info.kind != kindCIDR {
			p = computePolicy(c.cfg, info.labels, maps.Values(c.rules), c.cache)
		}
		old := c.policies[id]
		c.setPolicy(id, p)
		if old == nil || p == nil || !old.sameDesired(p) {
			for ep := range eps {
				c.dirtyEndpoints[ep] = struct{}{}
			}
		}
	}
}

// write brings the tables in step with the computation in one
// transaction. Once the endpoints table is initialized too, it marks the
// engine's initializers done.
func (c *controller) write(endpointsInitialized bool) error {
	if !c.firstRound && len(c.dirtyEndpoints) == 0 && !c.allEndpoints && !c.cidr.pending() &&
		(c.initialized || !endpointsInitialized) {
		return nil // most rounds: a status write-back, an endpoint's state
	}
	// Before the rows: the file must know every number the kernel's
	// ipcache may get. A failed save is retried with the rest.
	if err := c.cidr.save(); err != nil {
		return err
	}
	wtxn := c.db.WriteTxn(c.policyTbl, c.ipcacheTbl, c.identitiesTbl)
	defer wtxn.Abort()

	if err := c.cidr.write(wtxn, c.firstRound); err != nil {
		return err
	}
	if c.firstRound {
		// Rows of endpoints the engine does not know (none, unless the
		// table outlived a previous controller).
		for row := range c.policyTbl.All(wtxn) {
			if _, ok := c.endpoints[row.EndpointID]; !ok {
				c.dirtyEndpoints[row.EndpointID] = struct{}{}
			}
		}
	}
	ids := c.dirtyEndpoints
	if c.allEndpoints {
		ids = maps.Clone(ids)
		for ep := range c.endpoints {
			ids[ep] = struct{}{}
		}
	}
	written := 0
	for ep := range ids {
		n, err := c.writeEndpoint(wtxn, ep)
		if err != nil {
			return err
		}
		written += n
	}
	if !c.initialized && endpointsInitialized {
		c.policyInit(wtxn)
		c.ipcacheInit(wtxn)
	}
	wtxn.Commit()

	if !c.initialized && endpointsInitialized {
		c.initialized = true
		c.log.Info("Endpoint policies computed", "endpoints", len(c.endpoints), "rules", len(c.rules), "revision", c.revision)
	}
	if written > 0 {
		c.log.Debug("Endpoint policies written", "rows", written, "revision", c.revision)
	}
	clear(c.dirtyEndpoints)
	c.cidr.written()
	c.allEndpoints, c.firstRound = false, false
	return nil
}

// writeEndpoint writes (or deletes) one endpoint's row; it returns 1 if
// it changed the table.
func (c *controller) writeEndpoint(wtxn statedb.WriteTxn, epID uint16) (int, error) {
	old, _, found := c.policyTbl.Get(wtxn, tables.EndpointPolicyIndex.Query(epID))
	id, want := c.endpoints[epID]
	p := c.policies[id]
	if !want || p == nil {
		if !found {
			return 0, nil
		}
		if _, _, err := c.policyTbl.Delete(wtxn, old); err != nil {
			return 0, fmt.Errorf("delete the policy of endpoint %d: %w", epID, err)
		}
		return 1, nil
	}
	row := endpointRow(epID, id, c.revision, p)
	if found && old.Revision == row.Revision && old.SameDesired(row) {
		return 0, nil
	}
	row.Status = reconciler.StatusPending()
	if _, _, err := c.policyTbl.Insert(wtxn, row); err != nil {
		return 0, fmt.Errorf("write the policy of endpoint %d: %w", epID, err)
	}
	return 1, nil
}

// The input tables, in the order of inputRevisions.
const (
	rulesInput = iota
	identitiesInput
	endpointsInput
	ipcacheInput
)

// inputRevisions are the revisions of the tables the controller follows.
func (c *controller) inputRevisions(txn statedb.ReadTxn) [4]statedb.Revision {
	return [4]statedb.Revision{c.rulesTbl.Revision(txn), c.identitiesTbl.Revision(txn), c.endpointsTbl.Revision(txn), c.ipcacheTbl.Revision(txn)}
}

func (c *controller) reportHealth(health cell.Health, writeErr error) {
	if writeErr != nil {
		c.log.Error("Cannot write endpoint policies", "error", writeErr)
		health.Degraded("writing endpoint policies failed (retrying)", writeErr)
		return
	}
	var problems []error
	for _, k := range slices.Sorted(maps.Keys(c.rules)) {
		for _, err := range c.rules[k].problems {
			problems = append(problems, fmt.Errorf("rule %s: %w", k, err))
		}
	}
	if len(problems) > 0 {
		health.Degraded(fmt.Sprintf("%d problem(s) in policy rules: the parts concerned select nothing", len(problems)), errors.Join(problems...))
		return
	}
	health.OK(fmt.Sprintf("%d endpoint policies from %d rules at revision %d (%d identities computed, %d selectors, %d CIDR identities)",
		len(c.endpoints), len(c.rules), c.revision, len(c.policies), len(c.cache.selectors), c.cidr.count()))
}
