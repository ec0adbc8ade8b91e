package policyrepo

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/metrics"
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

// Import writes the rules of one parsed document of the API (source
// tables.PolicySourceAPI) under a new revision, in one transaction: the
// API's rules owned by any CNP/CCNP/NetworkPolicy the document carries are
// replaced, the others kept. Rules of the cluster (source k8s) are never
// touched: the object of the same name in the cluster keeps its own.
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
		old := r.owned(wtxn, tables.PolicySourceAPI, func(o api.ObjectRef) bool { return slices.Contains(objs, o) })
		if err := r.deleteRows(wtxn, old, "replace"); err != nil {
			return 0, 0, err
		}
		replaced = len(old)
	}
	if err := r.insertRows(wtxn, tables.PolicySourceAPI, rev, 0, rules); err != nil {
		return 0, 0, err
	}
	if err := r.commit(wtxn, rev); err != nil {
		return 0, 0, err
	}
	metrics.PolicyImports.WithLabelValues(tables.PolicySourceAPI).Inc()
	r.log.Info("policy imported", "revision", rev, "rules", len(rules), "replaced", replaced)
	return rev, replaced, nil
}

// Objects is the desired state of a source's objects: the rules of each
// (as api.Parse gives them for the object), or nil to keep the rules the
// object has now (an object whose new version was refused).
type Objects map[api.ObjectRef][]api.ParsedRule

// SetObjects makes the rules of the objects of source what objs says,
// under one new revision, only if that changes anything (a resync that
// delivers the same object writes nothing). An object with no rules in
// objs (an empty, non-nil slice) loses its rules. With prune, the rules
// of the source's objects that objs does not name are removed too: the
// set converges to objs (what the cluster holds after a restart). Rules of
// other sources are never touched.
func (r *Repository) SetObjects(source string, objs Objects, prune bool) (revision uint64, changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wtxn := r.db.WriteTxn(r.rules, r.revisions)
	defer wtxn.Abort()
	rev := r.RevisionAt(wtxn) + 1

	current := map[api.ObjectRef][]*tables.PolicyRule{}
	for _, row := range r.owned(wtxn, source, func(o api.ObjectRef) bool { _, ok := objs[o]; return ok || prune }) {
		o, _ := objectOf(row.Labels)
		current[o] = append(current[o], row)
	}
	var doomed []*tables.PolicyRule
	var added []api.ParsedRule
	for o, rows := range current {
		if _, named := objs[o]; !named { // only with prune
			doomed = append(doomed, rows...)
		}
	}
	for _, o := range slices.SortedFunc(maps.Keys(objs), compareObjects) {
		want, rows := objs[o], current[o]
		if want == nil || sameRules(rows, want) {
			continue
		}
		doomed = append(doomed, rows...)
		added = append(added, want...)
	}
	if len(doomed) == 0 && len(added) == 0 {
		return r.RevisionAt(wtxn), false, nil
	}
	if err := r.deleteRows(wtxn, doomed, "replace"); err != nil {
		return 0, false, err
	}
	if err := r.insertRows(wtxn, source, rev, 0, added); err != nil {
		return 0, false, err
	}
	if err := r.commit(wtxn, rev); err != nil {
		return 0, false, err
	}
	metrics.PolicyImports.WithLabelValues(source).Inc()
	r.log.Info("policy updated", "source", source, "revision", rev, "rules", len(added), "removed", len(doomed))
	return rev, true, nil
}

// owned returns the rows of source that belong to an object for which
// want is true.
func (r *Repository) owned(txn statedb.ReadTxn, source string, want func(api.ObjectRef) bool) []*tables.PolicyRule {
	var out []*tables.PolicyRule
	for row := range r.rules.All(txn) {
		if row.Source != source {
			continue
		}
		if o, ok := objectOf(row.Labels); ok && o.Owns(row.Labels) && want(o) {
			out = append(out, row)
		}
	}
	return out
}

// objectOf names the object a rule's derived labels say it came from.
func objectOf(ruleLabels []string) (api.ObjectRef, bool) {
	var o api.ObjectRef
	prefix := api.LabelSourceK8s + ":"
	for _, l := range ruleLabels {
		k, v, _ := strings.Cut(strings.TrimPrefix(l, prefix), "=")
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		switch k {
		case api.PolicyLabelDerivedFrom:
			o.Kind = v
		case api.PolicyLabelName:
			o.Name = v
		case api.PolicyLabelNamespace:
			o.Namespace = v
		}
	}
	return o, o.Kind != "" && o.Name != ""
}

func compareObjects(a, b api.ObjectRef) int {
	return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// sameRules reports whether rows hold exactly the rules, in order, as the
// state file would write them.
func sameRules(rows []*tables.PolicyRule, rules []api.ParsedRule) bool {
	if len(rows) != len(rules) {
		return false
	}
	slices.SortFunc(rows, compareRules)
	for i, row := range rows {
		pr := rules[i]
		a, err1 := json.Marshal(row.Rule)
		b, err2 := json.Marshal(pr.Rule)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) || row.Namespace != pr.Namespace ||
			row.Clusterwide != pr.Clusterwide() || !slices.Equal(row.Labels, pr.Labels) {
			return false
		}
	}
	return true
}

func (r *Repository) deleteRows(wtxn statedb.WriteTxn, rows []*tables.PolicyRule, what string) error {
	for _, row := range rows {
		if _, _, err := r.rules.Delete(wtxn, row); err != nil {
			return fmt.Errorf("%s policy rule %s: %w", what, row.Key, err)
		}
	}
	return nil
}

// insertRows writes rules as rows of source keyed "rev/index", index
// counting from first.
func (r *Repository) insertRows(wtxn statedb.WriteTxn, source string, rev uint64, first int, rules []api.ParsedRule) error {
	for i, pr := range rules {
		row := &tables.PolicyRule{
			Key:         strconv.FormatUint(rev, 10) + "/" + strconv.Itoa(first+i),
			Rule:        pr.Rule,
			Revision:    rev,
			Namespace:   pr.Namespace,
			Clusterwide: pr.Clusterwide(),
			Labels:      slices.Clone(pr.Labels),
			Source:      source,
		}
		if _, _, err := r.rules.Insert(wtxn, row); err != nil {
			return fmt.Errorf("insert policy rule %s: %w", row.Key, err)
		}
	}
	return nil
}

// Delete removes the rules of the API (source tables.PolicySourceAPI)
// that carry every one of the labels (all of the API's rules when there
// are none) under a new revision. A label without a source matches that
// key=value of any source. ErrNoMatch when nothing matches. The rules of
// the cluster's objects go with the objects (kubectl delete), not here.
func (r *Repository) Delete(match []api.RuleLabel) (revision uint64, deleted int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wtxn := r.db.WriteTxn(r.rules, r.revisions)
	defer wtxn.Abort()

	var doomed []*tables.PolicyRule
	for row := range r.rules.All(wtxn) {
		if row.Source == tables.PolicySourceAPI && matchesAll(row.Labels, match) {
			doomed = append(doomed, row)
		}
	}
	if len(doomed) == 0 {
		return r.RevisionAt(wtxn), 0, ErrNoMatch
	}
	rev := r.RevisionAt(wtxn) + 1
	if err := r.deleteRows(wtxn, doomed, "delete"); err != nil {
		return 0, 0, err
	}
	if err := r.commit(wtxn, rev); err != nil {
		return 0, 0, err
	}
	metrics.PolicyImports.WithLabelValues(tables.PolicySourceAPI).Inc()
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
