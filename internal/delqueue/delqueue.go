// Package delqueue is the on-disk queue of CNI DELs that membrane-cni
// could not hand to the agent because the agent was down. The plugin
// removes what it can alone (the host veth), records the DEL here and
// reports success, so the runtime neither retries forever nor gives up
// with the pod's address, endpoint and identity reference leaked. The
// agent processes the queue at start, before it opens its API socket,
// exactly like an API DEL of each attachment (cells/cnidelqueue).
//
// Layout: <state-dir>/cni-del-queue/, one small JSON file per attachment
// (Entry), named after the attachment (sha256 of "container-id:ifname"),
// written atomically (temporary file, fsync, rename). A second DEL of the
// same attachment (kubelet's double DEL) finds the file there and leaves
// it: duplicates collapse, the first DEL's record stands. The queue holds
// at most MaxEntries files of at most MaxEntrySize bytes; when it is full
// the DEL fails as it did before the queue existed.
//
// Locking, so that no entry is ever written behind the back of an agent
// that has already read the queue: the agent holds an exclusive flock(2)
// on the queue directory from before it reads the queue until it stops
// (Acquire); the plugin writes an entry only under a shared flock taken
// without waiting (TryShared). Either the plugin gets its lock first, and
// the starting agent waits for it and then reads the entry, or the agent
// holds the lock, and the plugin, refused, tells the runtime to retry
// (the agent is starting or stopping: its socket answers in a moment).
// The kernel drops a flock when its process dies, so a crashed agent
// leaves no stale lock. The state dir's own lock (internal/dirlock) is a
// different one: a plugin holding it even briefly would make an agent
// start fail.
//
// The package is shared by the plugin and the agent; it links nothing
// heavier than the standard library and x/sys.
package delqueue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/internal/atomicfile"
)

// DirName is the queue's directory inside the agent's state dir.
const DirName = "cni-del-queue"

// Bounds of the queue: a node whose agent is down for long while pods
// churn stops queueing at MaxEntries (the DEL then fails and the runtime
// retries it, as without the queue), and no entry is larger than
// MaxEntrySize, so reading the queue at start is cheap whatever is in it.
const (
	MaxEntries   = 1024
	MaxEntrySize = 4096
)

// Version is the entry format written; Decode refuses others.
const Version = 1

// Limits of an entry's fields: a container ID is an opaque string of the
// runtime (64 hex digits for containerd, CRI-O and podman); an interface
// name is at most IFNAMSIZ-1 bytes.
const (
	maxContainerID = 512
	maxIfName      = 15
	maxPod         = 512
)

// suffix ends every entry's file name; anything else in the directory
// (atomicfile's ".name.tmp*" files, entries set aside) is not an entry.
const suffix = ".json"

// Entry is one queued DEL.
type Entry struct {
	Version int `json:"version"`
	// ContainerID and IfName are the CNI attachment.
	ContainerID string `json:"container-id"`
	IfName      string `json:"ifname"`
	// Pod is "namespace/name" if the runtime named it, for the logs.
	Pod string `json:"pod,omitempty"`
	// HostIfIndex is the ifindex of the attachment's host veth when the
	// plugin removed it, 0 if it was already gone. The agent removes an
	// endpoint only if it sits on that interface (or the DEL saw none).
	HostIfIndex int `json:"host-ifindex,omitempty"`
	// Queued is when the plugin recorded the DEL. The agent removes only
	// an endpoint and addresses created before it: anything newer belongs
	// to a later ADD of the same attachment.
	Queued time.Time `json:"queued"`
}

// Owner is the attachment as the agent's IPAM and endpoints name it.
func (e *Entry) Owner() string { return e.ContainerID + ":" + e.IfName }

// Name is the file name of the attachment's entry.
func Name(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + ":" + ifName))
	return hex.EncodeToString(sum[:16]) + suffix
}

// Validate checks an entry's fields.
func (e *Entry) Validate() error {
	switch {
	case e.Version != Version:
		return fmt.Errorf("version %d, want %d", e.Version, Version)
	case e.ContainerID == "" || len(e.ContainerID) > maxContainerID || !printable(e.ContainerID):
		return fmt.Errorf("invalid container ID %q", e.ContainerID)
	case e.IfName == "" || len(e.IfName) > maxIfName || !printable(e.IfName) ||
		strings.ContainsAny(e.IfName, ":/ ") || e.IfName == "." || e.IfName == "..":
		return fmt.Errorf("invalid interface name %q", e.IfName)
	case len(e.Pod) > maxPod || !printable(e.Pod):
		return fmt.Errorf("invalid pod %q", e.Pod)
	case e.HostIfIndex < 0:
		return fmt.Errorf("invalid host ifindex %d", e.HostIfIndex)
	case e.Queued.IsZero():
		return errors.New("no queue time")
	}
	return nil
}

func printable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar })
}

// Encode is the entry's file content.
func Encode(e *Entry) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("queued DEL of %s: %w", e.Owner(), err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("queued DEL of %s: %d bytes, more than %d", e.Owner(), len(b), MaxEntrySize)
	}
	return append(b, '\n'), nil
}

// Decode parses and validates an entry's file content: one JSON object,
// no more than MaxEntrySize bytes, every field valid.
func Decode(data []byte) (*Entry, error) {
	if len(data) > MaxEntrySize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), MaxEntrySize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("not a queued DEL: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a queued DEL: data after the JSON object")
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Errors of the plugin's side.
var (
	// ErrHeld: the agent holds the queue (it is starting, running or
	// stopping), so the DEL must go to its API.
	ErrHeld = errors.New("the agent holds the CNI DEL queue")
	// ErrFull: MaxEntries DELs are queued already.
	ErrFull = errors.New("the CNI DEL queue is full")
	// ErrNoStateDir: the state dir does not exist, so no agent ever ran
	// there to read a queue (a "stateDir" that is not the agent's?).
	ErrNoStateDir = errors.New("the agent's state dir does not exist")
)

// Dir is the queue directory of a state dir.
func Dir(stateDir string) string { return filepath.Join(stateDir, DirName) }

// Lock is a held lock on the queue of a state dir.
type Lock struct {
	f   *os.File
	dir string
}

// TryShared takes the plugin's shared lock without waiting. It creates
// the queue directory inside stateDir, never stateDir itself (that is
// ErrNoStateDir). ErrHeld means the agent holds the queue.
func TryShared(stateDir string) (*Lock, error) {
	st, err := os.Stat(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoStateDir, stateDir)
	}
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("state dir %s is not a directory", stateDir)
	}
	return lock(Dir(stateDir), unix.LOCK_SH|unix.LOCK_NB)
}

// Acquire takes the agent's exclusive lock, creating the queue directory
// (and the state dir) if needed. It waits for plugins that are writing an
// entry, until ctx is done; waiting, if not nil, is called once when it
// starts to wait.
func Acquire(ctx context.Context, stateDir string, waiting func()) (*Lock, error) {
	dir := Dir(stateDir)
	for {
		l, err := lock(dir, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, ErrHeld) {
			return l, err
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("locking the CNI DEL queue %s: still held by a membrane-cni process (or another agent with this --state-dir)", dir)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func lock(dir string, how int) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the CNI DEL queue: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the CNI DEL queue: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrHeld, dir)
		}
		return nil, fmt.Errorf("locking the CNI DEL queue %s: %w", dir, err)
	}
	return &Lock{f: f, dir: dir}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Dir is the queue directory.
func (l *Lock) Dir() string { return l.dir }

// Enqueue records e (under the plugin's lock). An entry for the same
// attachment already there stands (queued reports false). A full queue is
// ErrFull. Concurrent plugins share the lock, so the bound may be passed
// by as many entries as DELs run at once.
func (l *Lock) Enqueue(e *Entry) (queued bool, err error) {
	data, err := Encode(e)
	if err != nil {
		return false, err
	}
	path := filepath.Join(l.dir, Name(e.ContainerID, e.IfName))
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	}
	names, err := l.names()
	if err != nil {
		return false, err
	}
	if len(names) >= MaxEntries {
		return false, fmt.Errorf("%w: %d DELs wait in %s for the agent to start", ErrFull, len(names), l.dir)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return false, fmt.Errorf("queueing the DEL: %w", err)
	}
	return true, nil
}

// names lists the entries' file names.
func (l *Lock) names() ([]string, error) {
	des, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("reading the CNI DEL queue: %w", err)
	}
	var names []string
	for _, de := range des {
		if n := de.Name(); strings.HasSuffix(n, suffix) && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	return names, nil
}

// Item is one file of the queue as the agent reads it: the entry, or why
// it cannot be one.
type Item struct {
	Name  string
	Entry *Entry
	Err   error
}

// Items reads the queue (under the agent's lock), in name order. An
// entry that cannot be read, decoded or does not match its file name has
// Err set: SetAside it.
func (l *Lock) Items() ([]Item, error) {
	names, err := l.names()
	if err != nil {
		return nil, err
	}
	items := make([]Item, 0, len(names))
	for _, n := range names {
		it := Item{Name: n}
		it.Entry, it.Err = l.read(n)
		if it.Err == nil && Name(it.Entry.ContainerID, it.Entry.IfName) != n {
			it.Entry, it.Err = nil, fmt.Errorf("entry of %s is in the file of another attachment", it.Entry.Owner())
		}
		items = append(items, it)
	}
	return items, nil
}

func (l *Lock) read(name string) (*Entry, error) {
	f, err := os.OpenFile(filepath.Join(l.dir, name), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxEntrySize+1))
	if err != nil {
		return nil, err
	}
	return Decode(data)
}

// Path is the path of a queue file.
func (l *Lock) Path(name string) string { return filepath.Join(l.dir, name) }

// Remove deletes a processed entry.
func (l *Lock) Remove(name string) error {
	if err := os.Remove(l.Path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// SetAside renames an entry that is not one to ".NAME.corrupt", out of the
// queue (and its bound), for an operator to look at, and returns the new
// path. One corrupt file per attachment at most: a later one replaces it.
func (l *Lock) SetAside(name string) (string, error) {
	to := l.Path("." + strings.TrimSuffix(name, suffix) + ".corrupt")
	return to, os.Rename(l.Path(name), to)
}
