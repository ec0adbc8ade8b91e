package noderoutes

import (
	"context"
	"iter"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Datapath is how this node reaches the pods of another: the one thing
// a routing mode implements. Update is called for every row of the nodes
// table that changed (this node's own and refused rows included: they
// must end with nothing installed), Delete for a row gone, Prune with
// every row once the table is initialized and then periodically, to
// remove what no row explains. Each must be idempotent.
type Datapath interface {
	Update(n *tables.Node) error
	Delete(n *tables.Node) error
	Prune(nodes iter.Seq[*tables.Node]) error
}

// ops adapts a Datapath to the reconciler.
type ops struct{ dp Datapath }

func (o ops) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *tables.Node) error {
	return o.dp.Update(n)
}

func (o ops) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *tables.Node) error {
	return o.dp.Delete(n)
}

func (o ops) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.Node, statedb.Revision]) error {
	return o.dp.Prune(func(yield func(*tables.Node) bool) {
		for n := range objs {
			if !yield(n) {
				return
			}
		}
	})
}
