package ipam

import (
	"fmt"
	"net/netip"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

// stateFileName is the file in --state-dir holding the allocations.
const stateFileName = "ipam.json"

const stateVersion = 1

// stateFile is the on-disk form of the ipam table. It is a snapshot written
// in full (atomically) on every change; the table stays the source of truth
// while the agent runs.
type stateFile struct {
	Version int `json:"version"`
	// LastAllocated is each family's search cursor, so that after a restart
	// a just-released address is still not the next one handed out.
	LastAllocated map[Family]netip.Addr    `json:"last-allocated,omitempty"`
	Allocations   []*tables.IPAMAllocation `json:"allocations"`
}

// persist writes every row visible in txn, plus the cursors, to the state
// file. Called with m.mu held and the write transaction still open, so the
// file and the table change together: if the write fails the caller aborts
// the transaction and neither changes.
func (m *IPAM) persist(txn statedb.ReadTxn, cursors map[Family]netip.Addr) error {
	st := stateFile{
		Version:       stateVersion,
		LastAllocated: cursors,
		Allocations:   sortedRows(m.table.All(txn)),
	}
	if err := m.dir.WriteJSON(stateFileName, st); err != nil {
		return fmt.Errorf("saving IPAM state to %s: %w", m.dir.Path(stateFileName), err)
	}
	return nil
}

// load fills the ipam table from the state file and marks the table
// initialized. Allocations outside the configured CIDRs (the CIDR changed
// between runs) are kept: they are listed, logged, never handed out again
// (they are not in any pool), and released like any other address. Dropping
// them silently could give a running pod's address to nobody-knows-whom if
// the CIDR is changed back; failing the start would leave the node without
// networking over what is usually a deliberate change.
func (m *IPAM) load() (loaded, outside int, err error) {
	var st stateFile
	found, err := m.dir.ReadJSON(stateFileName, &st)
	if err != nil {
		return 0, 0, fmt.Errorf("IPAM: %w", err)
	}
	if found && st.Version > stateVersion {
		return 0, 0, fmt.Errorf("IPAM: %s has format version %d, newer than this agent understands (%d): it was written by a newer membrane-agent; run that, or move the file away to start with no allocations",
			m.dir.Path(stateFileName), st.Version, stateVersion)
	}

	wtxn := m.db.WriteTxn(m.table)
	defer wtxn.Abort()
	for _, a := range st.Allocations {
		if a == nil || !a.IP.IsValid() {
			m.log.Warn("Ignoring IPAM state entry without an IP address", "file", m.dir.Path(stateFileName))
			continue
		}
		row := *a
		row.IP = row.IP.Unmap().WithZone("")
		if old, _, dup := m.table.Get(wtxn, tables.IPAMIPIndex.Query(row.IP)); dup {
			m.log.Warn("Duplicate IPAM state entry, keeping the first",
				"ip", row.IP, "kept-owner", old.Owner, "dropped-owner", row.Owner)
			continue
		}
		if p := m.poolOf(row.IP); p == nil || !p.handsOut(row.IP) {
			outside++
			m.log.Warn("Restored an allocation outside the configured pod CIDRs (was --pod-cidr/--pod-cidr-v6 changed?). "+
				"It stays listed (membrane ipam list) and is never handed out again; release it with DELETE /v1/ipam/"+row.IP.String()+" once its pod is gone",
				"ip", row.IP, "owner", row.Owner, "pod", row.Pod, "cidrs", m.cidrs())
		}
		if _, _, err := m.table.Insert(wtxn, &row); err != nil {
			return 0, 0, fmt.Errorf("IPAM: restoring %s: %w", row.IP, err)
		}
		loaded++
	}

	for _, p := range m.pools() {
		p.cursor = netip.Addr{}
		if c, ok := st.LastAllocated[p.family]; ok && p.handsOut(c) {
			p.cursor = c
			continue
		}
		// No cursor saved: continue after the newest allocation.
		var newest *tables.IPAMAllocation
		for a := range m.table.All(wtxn) {
			if p.handsOut(a.IP) && (newest == nil || a.Created.After(newest.Created)) {
				newest = a
			}
		}
		if newest != nil {
			p.cursor = newest.IP
		}
	}

	m.initDone(wtxn)
	wtxn.Commit()
	return loaded, outside, nil
}
