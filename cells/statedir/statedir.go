// Package statedir provides the agent's state directory (--state-dir,
// default /var/lib/membrane): where cells persist what must survive a
// restart (identities, IPAM allocations, endpoints). Files are written
// atomically (temporary file, fsync, rename), so a crash leaves either the
// old or the new content, never a torn file.
//
// The agent holds the directory exclusively while it runs
// (internal/dirlock): a second agent given the same --state-dir refuses
// to start, naming the first one's PID, instead of handing out the same
// IPs and overwriting its files.
package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/internal/atomicfile"
	"github.com/membrane-net/membrane/internal/dirlock"
)

// Config of the state directory.
type Config struct {
	StateDir string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("state-dir", def.StateDir, "Directory where the agent persists endpoints, identities, IPAM allocations, API-registered pods and policy rules across restarts")
}

// Cell provides Dir.
var Cell = cell.Module(
	"state-dir",
	"Agent state directory",

	cell.Config(Config{StateDir: "/var/lib/membrane"}),
	cell.Provide(newDir),
)

// newDir creates the directory when the agent starts, not when the hive is
// built (`membrane-agent hive` must not touch the disk). Its start hook runs
// before those of the cells that read their state from it.
func newDir(lc cell.Lifecycle, c Config) (Dir, error) {
	if c.StateDir == "" {
		return Dir{}, errors.New("--state-dir must not be empty")
	}
	d := Dir{path: c.StateDir}
	var lock *dirlock.Lock
	lc.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			if _, err := Open(c.StateDir); err != nil {
				return err
			}
			var err error
			lock, err = dirlock.Acquire(c.StateDir, "--state-dir")
			return err
		},
		OnStop: func(cell.HookContext) error { return lock.Unlock() },
	})
	return d, nil
}

// Dir is the state directory.
type Dir struct{ path string }

// Open creates the directory if needed.
func Open(path string) (Dir, error) {
	if path == "" {
		return Dir{}, errors.New("--state-dir must not be empty")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return Dir{}, fmt.Errorf("state dir: %w", err)
	}
	return Dir{path: path}, nil
}

// Path returns the path of name inside the directory.
func (d Dir) Path(name string) string { return filepath.Join(d.path, name) }

// WriteFile replaces name atomically.
func (d Dir) WriteFile(name string, data []byte) error {
	return atomicfile.WriteFile(d.Path(name), data, 0o600)
}

// WriteJSON marshals v into name atomically.
func (d Dir) WriteJSON(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return d.WriteFile(name, data)
}

// JSONArray joins JSON values encoded one by one into a JSON array, one
// value to a line: what ReadJSON reads back into a slice. A state file
// that keeps each entry's encoding (re-encoding only the entries that
// changed) saves with it.
func JSONArray[E ~string | ~[]byte](entries []E) []byte {
	size := 4
	for _, e := range entries {
		size += len(e) + 2
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '[', '\n')
	for i, e := range entries {
		if i > 0 {
			buf = append(buf, ',', '\n')
		}
		buf = append(buf, e...)
	}
	if len(entries) > 0 {
		buf = append(buf, '\n')
	}
	return append(buf, ']', '\n')
}

// ReadJSON unmarshals name into v; found is false if the file does not exist.
// A file that cannot be parsed is an error naming it, never silently dropped.
func (d Dir) ReadJSON(name string, v any) (found bool, err error) {
	data, err := os.ReadFile(d.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("state file %s is corrupt: %w (move it away to start afresh)", d.Path(name), err)
	}
	return true, nil
}

// Remove deletes name; a missing file is not an error.
func (d Dir) Remove(name string) error {
	if err := os.Remove(d.Path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
