package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/membrane-net/membrane/statedb/tables"
)

// cidrStateFile keeps the CIDR identity numbers across restarts: the
// kernel's ipcache map outlives the agent, and if the restarted engine
// numbered the prefixes differently, the ipcache and the policy maps
// would disagree about world traffic until both are rewritten.
const cidrStateFile = "cidr-identities.json"

// cidrStateVersion is the format of cidrStateFile. A file of another
// version is ignored: the numbers are only a preference.
const cidrStateVersion = 1

type cidrState struct {
	Version    int              `json:"version"`
	Identities []cidrStateEntry `json:"identities"`
}

type cidrStateEntry struct {
	Prefix   netip.Prefix           `json:"prefix"`
	Identity tables.NumericIdentity `json:"identity"`
}

// restore reserves the numbers of the previous run in the allocator. The
// file is a preference, not a source of truth: one that cannot be read is
// logged and rewritten at the next save, never fatal.
func (ci *cidrIdentities) restore() {
	if ci.dir == nil {
		return
	}
	path := ci.dir.Path(cidrStateFile)
	var st cidrState
	found, err := ci.dir.ReadJSON(cidrStateFile, &st)
	switch {
	case err != nil:
		ci.log.Warn("Ignoring the saved CIDR identities: they are numbered afresh", "file", path, "error", err)
		ci.fileStale = true
		return
	case !found:
		return
	case st.Version != cidrStateVersion:
		ci.log.Warn("Ignoring the saved CIDR identities: unsupported format version, they are numbered afresh",
			"file", path, "version", st.Version, "supported", cidrStateVersion)
		ci.fileStale = true
		return
	}
	for _, e := range st.Identities {
		if err := ci.alloc.reserve(e.Prefix, e.Identity); err != nil {
			ci.log.Warn("Ignoring a saved CIDR identity", "file", path, "prefix", e.Prefix, "identity", e.Identity, "error", err)
			ci.fileStale = true
			continue
		}
		ci.saved[e.Prefix] = e.Identity
	}
	ci.log.Info("CIDR identities restored", "file", path, "identities", len(ci.saved))
}

// save writes the allocator's mapping if it differs from the file's. The
// controller saves before it commits the rows: the file must know every
// number the kernel's ipcache may get.
func (ci *cidrIdentities) save() error {
	if !ci.unsaved {
		return nil
	}
	if ci.dir != nil {
		cidrs := ci.alloc.snapshot()
		if ci.fileStale || !maps.Equal(cidrs, ci.saved) {
			st := cidrState{Version: cidrStateVersion, Identities: make([]cidrStateEntry, 0, len(cidrs))}
			for _, p := range slices.SortedFunc(maps.Keys(cidrs), comparePrefix) {
				st.Identities = append(st.Identities, cidrStateEntry{Prefix: p, Identity: cidrs[p]})
			}
			if err := ci.dir.WriteJSON(cidrStateFile, st); err != nil {
				return fmt.Errorf("save CIDR identities to %s: %w", ci.dir.Path(cidrStateFile), err)
			}
			ci.saved, ci.fileStale = cidrs, false
		}
	}
	ci.unsaved = false
	return nil
}
