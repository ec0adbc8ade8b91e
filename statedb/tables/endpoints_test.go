package tables

import (
	"slices"
	"testing"

	"github.com/cilium/statedb"
)

func TestEndpointStateIndexLeavesOutReady(t *testing.T) {
	db := statedb.New()
	tbl, err := NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(tbl)
	tbl.Insert(wtxn, &Endpoint{ID: 1, ContainerID: "a", State: StateReady})
	tbl.Insert(wtxn, &Endpoint{ID: 2, ContainerID: "b", State: StateWaitingToRegenerate})
	wtxn.Commit()
	for state, want := range map[EndpointState][]uint16{StateReady: nil, StateWaitingToRegenerate: {2}} {
		var ids []uint16
		for ep := range tbl.List(db.ReadTxn(), EndpointStateIndex.Query(state)) {
			ids = append(ids, ep.ID)
		}
		if !slices.Equal(ids, want) {
			t.Errorf("%s: endpoints %v, want %v", state, ids, want)
		}
	}
}
