package identity

import (
	"fmt"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// StateFile is the allocator's file in the state directory.
const StateFile = "identities.json"

// stateVersion is the format of StateFile; a file of another version is
// refused rather than misread.
const stateVersion = 1

// State is what the allocator persists: the cluster identities it handed
// out and where the next search for a free number starts. Reserved
// identities are not persisted: the agent defines them.
type State struct {
	Version    int                    `json:"version"`
	Next       tables.NumericIdentity `json:"next"`
	Identities []StoredIdentity       `json:"identities"`
}

// StoredIdentity is one allocated identity; labels are kept in their
// canonical string form so the file reads like `membrane identity list`.
type StoredIdentity struct {
	ID     tables.NumericIdentity `json:"id"`
	Labels []string               `json:"labels"`
}

// Store persists the allocator's State. Save must replace the previous
// state atomically: a crash leaves the old or the new state, never a mix.
type Store interface {
	// Load returns the saved state; found is false if nothing was saved yet.
	Load() (st State, found bool, err error)
	Save(State) error
}

// FileStore keeps the state in StateFile of the agent's state directory.
type FileStore struct{ Dir statedir.Dir }

func (s FileStore) Load() (State, bool, error) {
	var st State
	found, err := s.Dir.ReadJSON(StateFile, &st)
	if err != nil {
		return State{}, found, err
	}
	if found && st.Version != stateVersion {
		return State{}, true, fmt.Errorf("%s: unsupported version %d (this agent reads version %d)", s.Dir.Path(StateFile), st.Version, stateVersion)
	}
	return st, found, nil
}

func (s FileStore) Save(st State) error {
	if err := s.Dir.WriteJSON(StateFile, st); err != nil {
		return fmt.Errorf("save identities to %s: %w", s.Dir.Path(StateFile), err)
	}
	return nil
}

// Where reports where the state lives, for error messages.
func (s FileStore) Where() string { return s.Dir.Path(StateFile) }
