package tables

import (
	"testing"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
)

func TestEndpointPolicyPendingIndexHoldsOnlyPending(t *testing.T) {
	db := statedb.New()
	tbl, err := NewEndpointPolicyTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(tbl)
	tbl.Insert(wtxn, &EndpointPolicy{EndpointID: 1, Status: reconciler.StatusPending()})
	tbl.Insert(wtxn, &EndpointPolicy{EndpointID: 2, Status: reconciler.StatusDone()})
	tbl.Insert(wtxn, &EndpointPolicy{EndpointID: 3, Status: reconciler.StatusError(nil)})
	wtxn.Commit()
	var pending []uint16
	for row := range tbl.List(db.ReadTxn(), EndpointPolicyPendingIndex.Query(true)) {
		pending = append(pending, row.EndpointID)
	}
	if len(pending) != 1 || pending[0] != 1 {
		t.Fatalf("pending rows %v, want [1]", pending)
	}
	// The others have no entry at all.
	for row := range tbl.List(db.ReadTxn(), EndpointPolicyPendingIndex.Query(false)) {
		t.Fatalf("row %d (%s) in the index", row.EndpointID, row.Status.Kind)
	}
	// Reconciled: out of the index.
	wtxn = db.WriteTxn(tbl)
	tbl.Insert(wtxn, &EndpointPolicy{EndpointID: 1, Status: reconciler.StatusDone()})
	wtxn.Commit()
	if n := tbl.NumObjects(db.ReadTxn()); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	for row := range tbl.List(db.ReadTxn(), EndpointPolicyPendingIndex.Query(true)) {
		t.Fatalf("row %d still pending", row.EndpointID)
	}
}
