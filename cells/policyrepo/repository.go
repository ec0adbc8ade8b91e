package policyrepo

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ErrNoMatch is returned by Delete when no rule matches.
var ErrNoMatch = errors.New("no policy rule matches")

// Repository writes the policy-rules table and numbers its versions.
type Repository struct {
	log   *slog.Logger
	db    *statedb.DB
	rules statedb.RWTable[*tables.PolicyRule]
	dir   statedir.Dir

	mu       sync.Mutex // serialises writers (import, delete, restore) and policy.json
	revision atomic.Uint64
	history  revisionHistory
}

// Revision is the current policy revision: 0 before any policy was
// imported, one more after every import or delete.
func (r *Repository) Revision() uint64 { return r.revision.Load() }

// RevisionAt is the policy revision of the rules a transaction sees.
// Reading rows and revision with the same txn gives a consistent pair, so
// the engine never reports a revision newer than the rules it computed
// from (which Revision, read a moment later, could be).
func (r *Repository) RevisionAt(txn statedb.ReadTxn) uint64 {
	return r.history.at(r.rules.Revision(txn))
}

// RevisionOfTable is the policy revision of the rules as they were at a
// revision of the policy-rules table: for a reader that follows the
// table's changes and knows the revision of the last one it processed.
func (r *Repository) RevisionOfTable(table statedb.Revision) uint64 {
	return r.history.at(table)
}

// Import writes the rules of one parsed document under a new revision,
// in one transaction: the rules owned by any CNP/CCNP the document
// carries are replaced, the others kept.
func (r *Repository) Import(rules []api.ParsedRule) (revision uint64, replaced int, err error) {
	if len(rules) == 0 {
		return 0, 0, errors.New("no rules to import")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rev := r.revision.Load() + 1
	wtxn := r.db.WriteTxn(r.rules)
	defer wtxn.Abort()

	var objs []api.ObjectRef
	for _, pr := range rules {
		if pr.Object != nil && !slices.Contains(objs, *pr.Object) {
			objs = append(objs, *pr.Object)
		}
	}
	if len(objs) > 0 {
		var old []*tables.PolicyRule
		for row := range r.rules.All(wtxn) {
			if slices.ContainsFunc(objs, func(o api.ObjectRef) bool { return o.Owns(row.Labels) }) {
				old = append(old, row)
			}
		}
		for _, row := range old {
			if _, _, err := r.rules.Delete(wtxn, row); err != nil {
				return 0, 0, fmt.Errorf("replace policy rule %s: %w", row.Key, err)
			}
		}
		replaced = len(old)
	}
	for i, pr := range rules {
		row := &tables.PolicyRule{
			Key:       strconv.FormatUint(rev, 10) + "/" + strconv.Itoa(i),
			Rule:      pr.Rule,
			Revision:  rev,
			Namespace: pr.Namespace,
			Labels:    slices.Clone(pr.Labels),
		}
		if _, _, err := r.rules.Insert(wtxn, row); err != nil {
			return 0, 0, fmt.Errorf("insert policy rule %s: %w", row.Key, err)
		}
	}
	if err := r.commit(wtxn, rev); err != nil {
		return 0, 0, err
	}
	r.log.Info("policy imported", "revision", rev, "rules", len(rules), "replaced", replaced)
	return rev, replaced, nil
}

// Delete removes the rules that carry every one of the labels (all rules
// when there are none) under a new revision. A label without a source
// matches that key=value of any source. ErrNoMatch when nothing matches.
func (r *Repository) Delete(match []api.RuleLabel) (revision uint64, deleted int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wtxn := r.db.WriteTxn(r.rules)
	defer wtxn.Abort()

	var doomed []*tables.PolicyRule
	for row := range r.rules.All(wtxn) {
		if matchesAll(row.Labels, match) {
			doomed = append(doomed, row)
		}
	}
	if len(doomed) == 0 {
		return r.revision.Load(), 0, ErrNoMatch
	}
	rev := r.revision.Load() + 1
	for _, row := range doomed {
		if _, _, err := r.rules.Delete(wtxn, row); err != nil {
			return 0, 0, fmt.Errorf("delete policy rule %s: %w", row.Key, err)
		}
	}
	if err := r.commit(wtxn, rev); err != nil {
		return 0, 0, err
	}
	r.log.Info("policy deleted", "revision", rev, "rules", len(doomed))
	return rev, len(doomed), nil
}

// matchesAll reports whether a rule's labels ("source:key=value") include
// every label of match.
func matchesAll(ruleLabels []string, match []api.RuleLabel) bool {
	for _, m := range match {
		if m.Source != "" {
			if !slices.Contains(ruleLabels, m.String()) {
				return false
			}
			continue
		}
		kv := strings.TrimPrefix(m.String(), api.LabelSourceUnspec+":")
		if !slices.ContainsFunc(ruleLabels, func(l string) bool {
			_, rest, _ := strings.Cut(l, ":")
			return rest == kv
		}) {
			return false
		}
	}
	return true
}

// commit persists the table as wtxn has it under rev, then commits. If
// the state file cannot be written, nothing changes (the caller aborts).
func (r *Repository) commit(wtxn statedb.WriteTxn, rev uint64) error {
	if err := r.save(wtxn, rev); err != nil {
		return fmt.Errorf("policy unchanged: %w", err)
	}
	// Recorded before the commit: a reader that sees the new rows finds
	// their revision.
	r.history.record(r.rules.Revision(wtxn), rev)
	wtxn.Commit()
	r.revision.Store(rev)
	return nil
}

// List returns the rules a transaction sees, oldest import first, in
// document order within an import.
func (r *Repository) List(txn statedb.ReadTxn) []*tables.PolicyRule {
	rows := []*tables.PolicyRule{}
	for row := range r.rules.All(txn) {
		rows = append(rows, row)
	}
	slices.SortFunc(rows, compareRules)
	return rows
}

// compareRules orders rows by revision, then by their index in the import
// (the part of the key after '/').
func compareRules(a, b *tables.PolicyRule) int {
	index := func(key string) int {
		_, i, _ := strings.Cut(key, "/")
		n, _ := strconv.Atoi(i)
		return n
	}
	return cmp.Or(cmp.Compare(a.Revision, b.Revision), cmp.Compare(index(a.Key), index(b.Key)), strings.Compare(a.Key, b.Key))
}

// maxHistory bounds the remembered (table revision, policy revision)
// pairs. A read transaction older than that many policy changes does not
// exist in practice; it would be answered with the oldest remembered one.
const maxHistory = 4096

// revisionHistory maps the policy-rules table's statedb revision to the
// policy revision: every write of the table is a policy change, so the
// policy revision a snapshot sees is that of the last change at or below
// the snapshot's table revision.
type revisionHistory struct {
	mu      sync.RWMutex
	entries []historyEntry // ascending
}

type historyEntry struct {
	table  statedb.Revision
	policy uint64
}

func (h *revisionHistory) record(table statedb.Revision, policy uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.entries); n > 0 && h.entries[n-1].table == table {
		h.entries[n-1].policy = policy // a change that left the table as it was
		return
	}
	h.entries = append(h.entries, historyEntry{table, policy})
	if len(h.entries) > maxHistory {
		h.entries = slices.Delete(h.entries, 0, len(h.entries)-maxHistory)
	}
}

func (h *revisionHistory) at(table statedb.Revision) uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	i, found := slices.BinarySearchFunc(h.entries, table, func(e historyEntry, t statedb.Revision) int { return cmp.Compare(e.table, t) })
	switch {
	case found:
		return h.entries[i].policy
	case i > 0:
		return h.entries[i-1].policy
	case len(h.entries) > 0:
		return h.entries[0].policy
	}
	return 0
}
