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

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// ErrNoMatch is returned by Delete when no rule matches.
var ErrNoMatch = errors.New("no policy rule matches")

// Repository writes the policy-rules table and numbers its versions in
// the policy-revision table, in the same transaction.
type Repository struct {
	log       *slog.Logger
	db        *statedb.DB
	rules     statedb.RWTable[*tables.PolicyRule]
	revisions statedb.RWTable[*tables.PolicyRevision]
	dir       statedir.Dir

	mu sync.Mutex // serialises writers (import, delete, restore) and policy.json
}

// Revision is the current policy revision: 0 before any policy was
// imported, one more after every import or delete.
func (r *Repository) Revision() uint64 { return r.RevisionAt(r.db.ReadTxn()) }

// RevisionAt is the policy revision of the rules a transaction sees:
// rows and revision read with the same txn are a consistent pair.
func (r *Repository) RevisionAt(txn statedb.ReadTxn) uint64 {
	if row, _ := tables.CurrentPolicyRevision(r.revisions, txn); row != nil {
		return row.Revision
	}
	return 0
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
	wtxn := r.db.WriteTxn(r.rules, r.revisions)
	defer wtxn.Abort()
	rev := r.RevisionAt(wtxn) + 1

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
			Key:         strconv.FormatUint(rev, 10) + "/" + strconv.Itoa(i),
			Rule:        pr.Rule,
			Revision:    rev,
			Namespace:   pr.Namespace,
			Clusterwide: pr.Clusterwide(),
			Labels:      slices.Clone(pr.Labels),
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
	wtxn := r.db.WriteTxn(r.rules, r.revisions)
	defer wtxn.Abort()

	var doomed []*tables.PolicyRule
	for row := range r.rules.All(wtxn) {
		if matchesAll(row.Labels, match) {
			doomed = append(doomed, row)
		}
	}
	if len(doomed) == 0 {
		return r.RevisionAt(wtxn), 0, ErrNoMatch
	}
	rev := r.RevisionAt(wtxn) + 1
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

// commit numbers the rules as wtxn has them with rev, persists them,
// then commits. If the state file cannot be written, nothing changes (the
// caller aborts).
func (r *Repository) commit(wtxn statedb.WriteTxn, rev uint64) error {
	if err := r.setRevision(wtxn, rev); err != nil {
		return err
	}
	if err := r.save(wtxn, rev); err != nil {
		return fmt.Errorf("policy unchanged: %w", err)
	}
	wtxn.Commit()
	return nil
}

// setRevision writes the policy-revision row in the transaction that
// wrote the rules, once they are written: a reader that sees the new rows
// sees their revision, and one that follows the rules' changes knows from
// RulesRevision when it has processed all of them.
func (r *Repository) setRevision(wtxn statedb.WriteTxn, rev uint64) error {
	row := &tables.PolicyRevision{Revision: rev, RulesRevision: r.rules.Revision(wtxn)}
	if _, _, err := r.revisions.Insert(wtxn, row); err != nil {
		return fmt.Errorf("write policy revision %d: %w", rev, err)
	}
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
