package identity

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

func lbls(t *testing.T, ss ...string) labels.Labels {
	t.Helper()
	ls, err := labels.ParseList(ss, labels.SourceK8s)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// memStore is a Store in memory; failSave makes Save fail.
type memStore struct {
	st       State
	saved    bool
	failSave bool
}

func (m *memStore) Load() (State, bool, error) { return m.st, m.saved, nil }
func (m *memStore) Save(st State) error {
	if m.failSave {
		return errors.New("disk full")
	}
	m.st, m.saved = st, true
	return nil
}

func open(t *testing.T, s Store, min, max tables.NumericIdentity) *Allocator {
	t.Helper()
	a, err := OpenAllocator(s, min, max)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func allocate(t *testing.T, a *Allocator, ls labels.Labels) tables.NumericIdentity {
	t.Helper()
	ident, _, err := a.Allocate(ls)
	if err != nil {
		t.Fatal(err)
	}
	return ident.ID
}

func TestSameLabelsSameIdentity(t *testing.T) {
	a := open(t, &memStore{}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	web := lbls(t, "k8s:app=web", "k8s:io.kubernetes.pod.namespace=default")
	first, isNew, err := a.Allocate(web)
	if err != nil || !isNew {
		t.Fatalf("first allocation: new=%v err=%v", isNew, err)
	}
	// The same labels given in another order are the same set.
	again, isNew, err := a.Allocate(lbls(t, "k8s:io.kubernetes.pod.namespace=default", "k8s:app=web"))
	if err != nil || isNew || again.ID != first.ID {
		t.Fatalf("same labels: got %d new=%v err=%v, want %d", again.ID, isNew, err, first.ID)
	}
	if first.ID != tables.MinClusterIdentity {
		t.Errorf("first cluster identity = %d, want %d", first.ID, tables.MinClusterIdentity)
	}
	if !first.Labels.Equal(web) || first.Reserved {
		t.Errorf("identity row = %+v", first)
	}
}

func TestDifferentLabelsDifferentIdentities(t *testing.T) {
	a := open(t, &memStore{}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	seen := map[tables.NumericIdentity]string{}
	for _, ls := range []labels.Labels{
		lbls(t, "k8s:app=web"),
		lbls(t, "k8s:app=db"),
		lbls(t, "k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"),
		lbls(t, "container:app=web"),
		{}, // no security labels at all is a label set too
	} {
		id := allocate(t, a, ls)
		if other, dup := seen[id]; dup {
			t.Fatalf("%q and %q both got %d", other, ls, id)
		}
		seen[id] = ls.String()
	}
}

func TestReservedIdentities(t *testing.T) {
	a := open(t, &memStore{}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	all := a.Identities()
	if len(all) != 10 {
		t.Fatalf("got %d identities, want the 10 reserved ones", len(all))
	}
	for i, ident := range all {
		want := tables.NumericIdentity(i + 1)
		if ident.ID != want || !ident.Reserved || ident.Labels.String() != "reserved:"+tables.ReservedIdentities[want] {
			t.Errorf("identity %d = %+v", want, ident)
		}
	}
	// The labels of a reserved identity give the reserved identity.
	if id := allocate(t, a, lbls(t, "reserved:host")); id != tables.IdentityHost {
		t.Errorf("reserved:host got %d, want %d", id, tables.IdentityHost)
	}
	// Reserved identities are never released.
	if got, err := a.Release(tables.IdentityHost, tables.IdentityWorld); err != nil || len(got) != 0 {
		t.Errorf("Release(reserved) = %v, %v", got, err)
	}
	if _, ok := a.Get(tables.IdentityHost); !ok {
		t.Error("host identity gone")
	}
}

func TestRangeBoundsAndExhaustion(t *testing.T) {
	a := open(t, &memStore{}, 300, 302)
	for i, app := range []string{"a", "b", "c"} {
		if id := allocate(t, a, lbls(t, "k8s:app="+app)); id != tables.NumericIdentity(300+i) {
			t.Errorf("app=%s got %d, want %d", app, id, 300+i)
		}
	}
	_, _, err := a.Allocate(lbls(t, "k8s:app=d"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("fourth label set in a range of three: err = %v, want ErrExhausted", err)
	}
	for _, want := range []string{"300..302", "k8s:app=d", "--identity-label-filter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("exhaustion error %q does not mention %q", err, want)
		}
	}
	// Labels that already have an identity still get it.
	if id := allocate(t, a, lbls(t, "k8s:app=b")); id != 301 {
		t.Errorf("app=b got %d after exhaustion, want 301", id)
	}
	// Releasing one makes room again.
	if _, err := a.Release(301); err != nil {
		t.Fatal(err)
	}
	if id := allocate(t, a, lbls(t, "k8s:app=d")); id != 301 {
		t.Errorf("app=d got %d, want the released 301", id)
	}

	for _, r := range [][2]tables.NumericIdentity{{0, 10}, {5, 300}, {10, 300}, {400, 300}} {
		if _, err := OpenAllocator(&memStore{}, r[0], r[1]); err == nil {
			t.Errorf("range %d..%d accepted", r[0], r[1])
		}
	}
}

// A released number is not handed out again before the range wraps.
func TestNextFitDoesNotReuseAtOnce(t *testing.T) {
	a := open(t, &memStore{}, 256, 259)
	web := allocate(t, a, lbls(t, "k8s:app=web")) // 256
	allocate(t, a, lbls(t, "k8s:app=db"))         // 257
	if _, err := a.Release(web); err != nil {
		t.Fatal(err)
	}
	if id := allocate(t, a, lbls(t, "k8s:app=cache")); id != 258 {
		t.Errorf("after releasing 256: got %d, want 258 (no immediate reuse)", id)
	}
	if id := allocate(t, a, lbls(t, "k8s:app=queue")); id != 259 {
		t.Errorf("got %d, want 259", id)
	}
	// The range wraps: 256 is free again, 257 is not.
	if id := allocate(t, a, lbls(t, "k8s:app=web")); id != 256 {
		t.Errorf("after wrapping: got %d, want 256", id)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	dir, err := statedir.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := open(t, FileStore{Dir: dir}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	web := allocate(t, a, lbls(t, "k8s:app=web"))
	db := allocate(t, a, lbls(t, "k8s:app=db"))
	tmp := allocate(t, a, lbls(t, "k8s:app=tmp"))
	if _, err := a.Release(tmp); err != nil {
		t.Fatal(err)
	}

	// A new allocator on the same directory: what a restarted agent sees.
	b := open(t, FileStore{Dir: dir}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
	if ident, ok := b.Lookup(lbls(t, "k8s:app=web")); !ok || ident.ID != web {
		t.Errorf("after reopen app=web = %v %v, want %d", ident, ok, web)
	}
	if ident, ok := b.Get(db); !ok || ident.Labels.String() != "k8s:app=db" {
		t.Errorf("after reopen %d = %v %v, want k8s:app=db", db, ident, ok)
	}
	if _, ok := b.Get(tmp); ok {
		t.Errorf("released identity %d came back", tmp)
	}
	if n := len(b.Identities()); n != 12 {
		t.Errorf("%d identities after reopen, want 10 reserved + 2", n)
	}
	// The allocation cursor survives too: the released number is not reused.
	if id := allocate(t, b, lbls(t, "k8s:app=new")); id != tmp+1 {
		t.Errorf("first allocation after reopen = %d, want %d", id, tmp+1)
	}

	// The file is readable by an operator.
	data, err := os.ReadFile(dir.Path(StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"k8s:app=web"`) {
		t.Errorf("state file does not list labels as strings:\n%s", data)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	for name, content := range map[string]string{
		"not json":      `{"version": 1, "identities": [`,
		"version":       `{"version": 7, "identities": []}`,
		"out of range":  `{"version": 1, "identities": [{"id": 12, "labels": ["k8s:app=web"]}]}`,
		"bad label":     `{"version": 1, "identities": [{"id": 256, "labels": ["k8s:app=we b"]}]}`,
		"no source":     `{"version": 1, "identities": [{"id": 256, "labels": ["app=web"]}]}`,
		"duplicate id":  `{"version": 1, "identities": [{"id": 256, "labels": ["k8s:a=1"]}, {"id": 256, "labels": ["k8s:b=1"]}]}`,
		"same labels":   `{"version": 1, "identities": [{"id": 256, "labels": ["k8s:a=1"]}, {"id": 257, "labels": ["k8s:a=1"]}]}`,
		"reserved":      `{"version": 1, "identities": [{"id": 256, "labels": ["reserved:host"]}]}`,
		"repeated keys": `{"version": 1, "identities": [{"id": 256, "labels": ["k8s:a=1", "k8s:a=2"]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir, err := statedir.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := dir.WriteFile(StateFile, []byte(content)); err != nil {
				t.Fatal(err)
			}
			_, err = OpenAllocator(FileStore{Dir: dir}, tables.MinClusterIdentity, tables.MaxClusterIdentity)
			if err == nil {
				t.Fatal("corrupt state accepted")
			}
			if !strings.Contains(err.Error(), dir.Path(StateFile)) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// If the state cannot be written, nothing is handed out or released: a
// number the file does not hold could be given to other labels after a
// restart.
func TestSaveFailureChangesNothing(t *testing.T) {
	s := &memStore{}
	a := open(t, s, 256, 300)
	web := allocate(t, a, lbls(t, "k8s:app=web"))
	s.failSave = true
	if _, _, err := a.Allocate(lbls(t, "k8s:app=db")); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Allocate with a failing store: %v", err)
	}
	if _, ok := a.Lookup(lbls(t, "k8s:app=db")); ok {
		t.Error("failed allocation kept")
	}
	if _, err := a.Release(web); err == nil {
		t.Fatal("Release with a failing store succeeded")
	}
	if _, ok := a.Get(web); !ok {
		t.Error("failed release dropped the identity")
	}
	s.failSave = false
	if id := allocate(t, a, lbls(t, "k8s:app=db")); id != web+1 {
		t.Errorf("after the store recovered: %d, want %d", id, web+1)
	}
}

func TestRestore(t *testing.T) {
	a := open(t, &memStore{}, 256, 1000)
	web := allocate(t, a, lbls(t, "k8s:app=web")) // 256

	// A restored endpoint's identity is honoured when it is free.
	ident, isNew, err := a.Restore(lbls(t, "k8s:app=db"), 500)
	if err != nil || !isNew || ident.ID != 500 {
		t.Fatalf("Restore(db, 500) = %v %v %v, want 500", ident, isNew, err)
	}
	// Labels that have an identity keep it.
	if ident, _, _ := a.Restore(lbls(t, "k8s:app=web"), 600); ident.ID != web {
		t.Errorf("Restore(web, 600) = %d, want web's %d", ident.ID, web)
	}
	// A number taken by other labels, or outside the range, is not honoured.
	if ident, _, _ := a.Restore(lbls(t, "k8s:app=cache"), 500); ident.ID == 500 {
		t.Error("Restore gave 500 to a second label set")
	}
	if ident, _, _ := a.Restore(lbls(t, "k8s:app=queue"), 5); ident.ID < 256 {
		t.Errorf("Restore gave reserved number %d", ident.ID)
	}
	// Restoring does not move the cursor: the next allocation follows the last Allocate.
	if id := allocate(t, a, lbls(t, "k8s:app=x")); id > 260 {
		t.Errorf("allocation after restores = %d, want right after 256", id)
	}
}

func TestAllocateRejectsInvalidLabels(t *testing.T) {
	a := open(t, &memStore{}, 256, 300)
	if _, _, err := a.Allocate(labels.Labels{{Source: "k8s", Key: "bad key"}}); err == nil {
		t.Error("invalid label accepted")
	}
}
