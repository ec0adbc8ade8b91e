package delqueue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func entry(cid string) *Entry {
	return &Entry{Version: Version, ContainerID: cid, IfName: "eth0", Pod: "shop/web", HostIfIndex: 7,
		Queued: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)}
}

func shared(t *testing.T, stateDir string) *Lock {
	t.Helper()
	l, err := TryShared(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Unlock() })
	return l
}

func exclusive(t *testing.T, stateDir string) *Lock {
	t.Helper()
	l, err := Acquire(context.Background(), stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Unlock() })
	return l
}

// An entry goes in as one file named after its attachment and comes out
// as it went in.
func TestEnqueueAndRead(t *testing.T) {
	dir := t.TempDir()
	e := entry("c1")
	l := shared(t, dir)
	queued, err := l.Enqueue(e)
	if err != nil || !queued {
		t.Fatalf("Enqueue: %v %v", queued, err)
	}
	l.Unlock()
	if _, err := os.Stat(filepath.Join(dir, DirName, Name("c1", "eth0"))); err != nil {
		t.Fatal(err)
	}
	items, err := exclusive(t, dir).Items()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Err != nil || *items[0].Entry != *e {
		t.Fatalf("items %+v, want %+v", items, e)
	}
}

// kubelet DELs twice: the second DEL of an attachment leaves the first's
// entry as it is.
func TestDuplicatesCollapse(t *testing.T) {
	dir := t.TempDir()
	l := shared(t, dir)
	first := entry("c1")
	if _, err := l.Enqueue(first); err != nil {
		t.Fatal(err)
	}
	second := entry("c1")
	second.Queued = first.Queued.Add(time.Minute)
	second.HostIfIndex = 0
	queued, err := l.Enqueue(second)
	if err != nil || queued {
		t.Fatalf("second Enqueue: queued %v, %v; want false, nil", queued, err)
	}
	l.Unlock()
	items, err := exclusive(t, dir).Items()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || *items[0].Entry != *first {
		t.Fatalf("items %+v, want only the first entry", items)
	}
}

// The queue stops at MaxEntries with ErrFull; a duplicate of a queued
// attachment is still fine, and a processed entry makes room.
func TestBounded(t *testing.T) {
	dir := t.TempDir()
	l := shared(t, dir)
	for i := range MaxEntries {
		if _, err := l.Enqueue(entry(fmt.Sprint("c", i))); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	_, err := l.Enqueue(entry("one-more"))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), l.Dir()) {
		t.Fatalf("Enqueue into a full queue: %v, want ErrFull naming the directory", err)
	}
	if _, err := l.Enqueue(entry("c0")); err != nil {
		t.Fatalf("a duplicate into a full queue: %v", err)
	}
	if err := l.Remove(Name("c0", "eth0")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Enqueue(entry("one-more")); err != nil {
		t.Fatalf("Enqueue after a removal: %v", err)
	}
}

// An entry is written whole or not at all: no temporary file is left and
// nothing but entries count; a leftover temporary file (a plugin killed
// mid-write) is not an entry.
func TestAtomic(t *testing.T) {
	dir := t.TempDir()
	l := shared(t, dir)
	if _, err := l.Enqueue(entry("c1")); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 1 {
		t.Fatalf("queue dir holds %d files, want 1 (no temporary file left)", len(des))
	}
	if err := os.WriteFile(filepath.Join(l.Dir(), "."+Name("c2", "eth0")+".tmp123"), []byte(`{"ver`), 0o600); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	items, err := exclusive(t, dir).Items()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Err != nil {
		t.Fatalf("items %+v, want the one entry", items)
	}
}

// A file that is not an entry (torn, garbage, too large, misnamed) is
// reported, and SetAside moves it out of the queue.
func TestCorruptEntries(t *testing.T) {
	dir := t.TempDir()
	x := exclusive(t, dir)
	good, _ := Encode(entry("good"))
	misnamed, _ := Encode(entry("other"))
	files := map[string][]byte{
		Name("good", "eth0"):  good,
		Name("torn", "eth0"):  good[:len(good)/2],
		Name("junk", "eth0"):  []byte("\x00\x01garbage"),
		Name("big", "eth0"):   []byte(`{"version":1,"container-id":"` + strings.Repeat("a", MaxEntrySize) + `"}`),
		Name("wrong", "eth0"): misnamed,
	}
	for n, data := range files {
		if err := os.WriteFile(x.Path(n), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	items, err := x.Items()
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, it := range items {
		if it.Name == Name("good", "eth0") {
			if it.Err != nil {
				t.Errorf("good entry: %v", it.Err)
			}
			continue
		}
		if it.Err == nil {
			t.Errorf("%s decoded: %+v", it.Name, it.Entry)
			continue
		}
		bad++
		to, err := x.SetAside(it.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(to); err != nil {
			t.Errorf("set-aside file: %v", err)
		}
	}
	if bad != 4 {
		t.Errorf("%d corrupt entries reported, want 4", bad)
	}
	items, err = x.Items()
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Err != nil {
		t.Errorf("after setting aside: %+v, want the good entry only", items)
	}
}

// The agent's lock excludes the plugin's (ErrHeld: use the API), and waits
// for a plugin that is writing; plugins share theirs.
func TestLocking(t *testing.T) {
	dir := t.TempDir()
	p1 := shared(t, dir)
	p2 := shared(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, dir, nil); err == nil || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("Acquire while plugins hold the queue: %v", err)
	}
	p1.Unlock()
	got := make(chan error, 1)
	go func() {
		l, err := Acquire(context.Background(), dir, nil)
		if err == nil {
			defer l.Unlock()
			_, err = TryShared(dir)
			if !errors.Is(err, ErrHeld) {
				err = fmt.Errorf("TryShared under the agent's lock: %v, want ErrHeld", err)
			} else {
				err = nil
			}
		}
		got <- err
	}()
	if _, err := p2.Enqueue(entry("late")); err != nil {
		t.Fatal(err)
	}
	p2.Unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// The plugin never creates the state dir: one that does not exist is an
// agent that never ran there.
func TestNoStateDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	if _, err := TryShared(missing); !errors.Is(err, ErrNoStateDir) {
		t.Fatalf("TryShared: %v, want ErrNoStateDir", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("TryShared created the state dir")
	}
}

// FuzzDecode: whatever is in a queue file, Decode never panics, and what
// it accepts is a valid entry that survives a round trip.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(entry("c1"))
	f.Add(good)
	f.Add([]byte(`{"version":1,"container-id":"c","ifname":"eth0","queued":"2026-12-05T08:00:00Z"}`))
	f.Add([]byte(`{"version":2,"container-id":"c","ifname":"eth0","queued":"2026-12-05T08:00:00Z"}`))
	f.Add([]byte(`{"version":1,"container-id":"c","ifname":"../x","queued":"2026-12-05T08:00:00Z"}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid entry %+v: %v", e, err)
		}
		again, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode of a decoded entry: %v", err)
		}
		e2, err := Decode(again)
		if err != nil || e2.Owner() != e.Owner() || !e2.Queued.Equal(e.Queued) || e2.HostIfIndex != e.HostIfIndex {
			t.Fatalf("round trip: %+v -> %+v (%v)", e, e2, err)
		}
	})
}
