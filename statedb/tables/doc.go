// Package tables is Membrane's shared state schema: the row types, indexes
// and constructors of the statedb tables through which the cells talk to
// each other. No cell calls another to push state around; it writes rows
// here and reacts to rows others wrote.
//
// The directory is named statedb/ after its role; the package is named
// tables so it does not shadow github.com/cilium/statedb in importers.
//
// Rows are immutable once inserted: Clone before changing one. Every table
// can be read live with `membrane statedb TABLE`.
package tables
