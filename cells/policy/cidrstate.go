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

// restoreCIDRs reserves the numbers of the previous run in the allocator.
// The file is a preference, not a source of truth: one that cannot be
// read is logged and rewritten at the next write, never fatal.
func (c *controller) restoreCIDRs() {
	if c.dir == nil {
		return
	}
	path := c.dir.Path(cidrStateFile)
	var st cidrState
	found, err := c.dir.ReadJSON(cidrStateFile, &st)
	switch {
	case err != nil:
		c.log.Warn("Ignoring the saved CIDR identities: they are numbered afresh", "file", path, "error", err)
		c.cidrFileStale = true
		return
	case !found:
		return
	case st.Version != cidrStateVersion:
		c.log.Warn("Ignoring the saved CIDR identities: unsupported format version, they are numbered afresh",
			"file", path, "version", st.Version, "supported", cidrStateVersion)
		c.cidrFileStale = true
		return
	}
	for _, e := range st.Identities {
		if err := c.cidr.reserve(e.Prefix, e.Identity); err != nil {
			c.log.Warn("Ignoring a saved CIDR identity", "file", path, "prefix", e.Prefix, "identity", e.Identity, "error", err)
			c.cidrFileStale = true
			continue
		}
		c.savedCIDRs[e.Prefix] = e.Identity
	}
	c.log.Info("CIDR identities restored", "file", path, "identities", len(c.savedCIDRs))
}

// saveCIDRs writes the allocator's mapping if it differs from the file's.
func (c *controller) saveCIDRs() error {
	if !c.cidrUnsaved {
		return nil
	}
	if c.dir != nil {
		cidrs := c.cidr.snapshot()
		if c.cidrFileStale || !maps.Equal(cidrs, c.savedCIDRs) {
			st := cidrState{Version: cidrStateVersion, Identities: make([]cidrStateEntry, 0, len(cidrs))}
			for _, p := range slices.SortedFunc(maps.Keys(cidrs), comparePrefix) {
				st.Identities = append(st.Identities, cidrStateEntry{Prefix: p, Identity: cidrs[p]})
			}
			if err := c.dir.WriteJSON(cidrStateFile, st); err != nil {
				return fmt.Errorf("save CIDR identities to %s: %w", c.dir.Path(cidrStateFile), err)
			}
			c.savedCIDRs, c.cidrFileStale = cidrs, false
		}
	}
	c.cidrUnsaved = false
	return nil
}
