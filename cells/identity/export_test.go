package identity

import (
	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/statedb/tables"
)

// WithRange narrows the cluster identity range of the cell, so tests can
// exhaust it.
func WithRange(min, max tables.NumericIdentity) cell.Cell {
	return cell.Provide(func() clusterRange { return clusterRange{min, max} })
}
