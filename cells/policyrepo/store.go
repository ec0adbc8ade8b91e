package policyrepo

import (
	"fmt"
	"slices"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// policyFile holds the rules and the revision across restarts, in the
// form GET /v1/policy answers.
const policyFile = "policy.json"

// derivedFromCCNP is the label of every rule imported from a
// CiliumClusterwideNetworkPolicy.
var derivedFromCCNP = api.RuleLabel{Source: api.LabelSourceK8s, Key: api.PolicyLabelDerivedFrom, Value: api.KindCCNP}.String()

type stateFile struct {
	Revision uint64               `json:"revision"`
	Rules    []*tables.PolicyRule `json:"rules"`
}

// save writes the rules as txn has them, under rev.
func (r *Repository) save(txn statedb.ReadTxn, rev uint64) error {
	return r.dir.WriteJSON(policyFile, stateFile{Revision: rev, Rules: r.List(txn)})
}

// restore loads policy.json into the table, then completes the table's
// initialization. A rule that no longer validates (a file edited by hand,
// or written by a version that accepted more) stops the start with an
// error naming the file and the rule, rather than enforcing less than
// was imported.
func (r *Repository) restore(done func(statedb.WriteTxn)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st stateFile
	found, err := r.dir.ReadJSON(policyFile, &st)
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	wtxn := r.db.WriteTxn(r.rules, r.revisions)
	defer wtxn.Abort()
	rev := st.Revision
	for i, row := range st.Rules {
		if row == nil || row.Key == "" {
			return fmt.Errorf("restore policy: state file %s: rule %d has no key (move the file away to start without policy)", r.dir.Path(policyFile), i)
		}
		if err := row.Rule.Validate(); err != nil {
			return fmt.Errorf("restore policy: state file %s: rule %s: %w (fix it, or move the file away to start without policy)", r.dir.Path(policyFile), row.Key, err)
		}
		if !row.Clusterwide && row.Namespace == "" && slices.Contains(row.Labels, derivedFromCCNP) {
			// Written before rows said so: the rule came from a
			// CiliumClusterwideNetworkPolicy, and is scoped as one.
			row.Clusterwide = true
		}
		if row.Source == "" {
			// Written before rows said where they came from: only the
			// API wrote rules then.
			row.Source = tables.PolicySourceAPI
		}
		if _, _, err := r.rules.Insert(wtxn, row); err != nil {
			return fmt.Errorf("restore policy rule %s: %w", row.Key, err)
		}
		rev = max(rev, row.Revision)
	}
	if err := r.setRevision(wtxn, rev); err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	done(wtxn)
	wtxn.Commit()
	if found {
		r.log.Info("policy restored", "revision", rev, "rules", len(st.Rules))
	}
	return nil
}
