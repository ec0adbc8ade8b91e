package policy

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"

	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// newPersistentEngine builds the engine with a state directory and with
// the policy-rules table waiting for a restore, as in the agent.
func newPersistentEngine(t *testing.T, dir string) *testEngine {
	return newTestEngineIn(t, dir, DefaultConfig, true)
}

// restoreRules inserts rules one transaction each, in the order given
// (the engine sees them in that order), then completes the restore.
func (e *testEngine) restoreRules(t *testing.T, rs ...*tables.PolicyRule) {
	for _, r := range rs {
		e.addRules(t, r)
	}
	wtxn := e.db.WriteTxn(e.rules)
	e.rulesRestored(wtxn)
	wtxn.Commit()
	e.sync(t)
}

// cidrIdentities returns the engine's ipcache rows, checking that each
// has its identities row.
func (e *testEngine) cidrIdentities(t *testing.T) map[string]tables.NumericIdentity {
	t.Helper()
	out := map[string]tables.NumericIdentity{}
	txn := e.db.ReadTxn()
	for p, row := range e.ipcacheRows() {
		if row.Source != IPCacheSource {
			continue
		}
		out[p.String()] = row.Identity &^ tables.LocalIdentityFlag
		if id, _, ok := e.identities.Get(txn, tables.IdentityIDIndex.Query(row.Identity)); !ok || !id.Labels.Equal(cidrLabels(p)) {
			t.Errorf("ipcache %s -> %d: identities row %+v", p, row.Identity, id)
		}
	}
	return out
}

// savedCIDRIdentities reads the state file, numbers without the flag.
func savedCIDRIdentities(t *testing.T, dir string) map[string]tables.NumericIdentity {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, cidrStateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st cidrState
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if st.Version != cidrStateVersion {
		t.Errorf("version %d", st.Version)
	}
	out := map[string]tables.NumericIdentity{}
	for _, e := range st.Identities {
		out[e.Prefix.String()] = e.Identity &^ tables.LocalIdentityFlag
	}
	return out
}

func expectCIDRs(t *testing.T, what string, got, want map[string]tables.NumericIdentity) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func toCIDR(key string, prefixes ...string) *tables.PolicyRule {
	return cidrRule(key, 1, policyapi.EgressRule{ToCIDR: prefixes})
}

func TestCIDRIdentitiesSurviveRestart(t *testing.T) {
	dir := t.TempDir()

	// First run: rules arrive one by one, so the numbers follow their
	// arrival, not the order the next start sees them in.
	e := newPersistentEngine(t, dir)
	e.h.StartTest()
	e.addIdentities(t, computeIdentities()...)
	e.addEndpoints(t, endpoint(1, 256))
	e.restoreRules(t)
	for _, r := range []*tables.PolicyRule{
		toCIDR("c", "10.3.0.0/16"),
		toCIDR("b", "10.2.0.0/16"),
		toCIDR("gone", "10.9.0.0/16"),
		toCIDR("a", "10.1.0.0/16", "10.3.0.0/16"),
	} {
		e.addRules(t, r)
		e.sync(t)
	}
	first := map[string]tables.NumericIdentity{"10.3.0.0/16": 1, "10.2.0.0/16": 2, "10.9.0.0/16": 3, "10.1.0.0/16": 4}
	expectCIDRs(t, "first run", e.cidrIdentities(t), first)
	expectCIDRs(t, "file after the first run", savedCIDRIdentities(t, dir), first)
	e.h.StopTest()

	// Second run: the rules come back in key order, all in the first
	// round, with "gone" missing and "new" added meanwhile.
	e = newPersistentEngine(t, dir)
	e.h.StartTest()
	e.addIdentities(t, computeIdentities()...)
	e.addEndpoints(t, endpoint(1, 256))
	e.restoreRules(t,
		toCIDR("new", "10.5.0.0/16"),
		toCIDR("a", "10.1.0.0/16", "10.3.0.0/16"),
		toCIDR("b", "10.2.0.0/16"),
		toCIDR("c", "10.3.0.0/16"),
	)
	// The restored prefixes keep their numbers; 10.5.0.0/16 does not take
	// 3, still reserved for 10.9.0.0/16 while restored rules are processed.
	second := map[string]tables.NumericIdentity{"10.3.0.0/16": 1, "10.2.0.0/16": 2, "10.1.0.0/16": 4, "10.5.0.0/16": 5}
	expectCIDRs(t, "after the restart", e.cidrIdentities(t), second)
	expectCIDRs(t, "file after the restart", savedCIDRIdentities(t, dir), second)

	// The policy uses the restored numbers.
	row, ok := e.row(1)
	if !ok {
		t.Fatal("no policy row")
	}
	expectEntries(t, row.Entries, "eg 16777217 any", "eg 16777218 any", "eg 16777220 any", "eg 16777221 any")

	// After the first round 3 is free again: lowest free number first.
	e.addRules(t, toCIDR("later", "10.6.0.0/16"))
	e.sync(t)
	second["10.6.0.0/16"] = 3
	expectCIDRs(t, "a rule after the restart", e.cidrIdentities(t), second)
	expectCIDRs(t, "file after a rule after the restart", savedCIDRIdentities(t, dir), second)
}

func TestCIDRIdentitiesFileNotWrittenWithoutCIDRs(t *testing.T) {
	dir := t.TempDir()
	e := newPersistentEngine(t, dir)
	e.h.StartTest()
	e.addIdentities(t, computeIdentities()...)
	e.restoreRules(t, allowDBToWeb80())
	if _, err := os.Stat(filepath.Join(dir, cidrStateFile)); !os.IsNotExist(err) {
		t.Errorf("state file written with no CIDR in the rules: %v", err)
	}
}

// logRecorder keeps what the cells log, for assertions on warnings.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func TestCIDRIdentitiesUnreadableFileIgnored(t *testing.T) {
	afresh := map[string]tables.NumericIdentity{"10.2.0.0/16": 1, "10.1.0.0/16": 2}
	for _, tc := range []struct {
		name, content, warning string
		want                   map[string]tables.NumericIdentity
	}{
		{
			name:    "corrupt",
			content: `{"version": 1, "identities": [{"prefix": "10.1.0.0/16", "ident`,
			warning: "Ignoring the saved CIDR identities", want: afresh,
		},
		{
			name:    "future version",
			content: `{"version": 99, "identities": [{"prefix": "10.1.0.0/16", "identity": 16777219}]}`,
			warning: "Ignoring the saved CIDR identities", want: afresh,
		},
		{
			name:    "bad prefix",
			content: `{"version": 1, "identities": [{"prefix": "bogus", "identity": 16777219}]}`,
			warning: "Ignoring the saved CIDR identities", want: afresh,
		},
		{
			// The valid entry is kept, the duplicate number dropped.
			name: "duplicate number",
			content: `{"version": 1, "identities": [{"prefix": "10.1.0.0/16", "identity": 16777219},
				{"prefix": "10.2.0.0/16", "identity": 16777219}]}`,
			warning: "Ignoring a saved CIDR identity",
			want:    map[string]tables.NumericIdentity{"10.2.0.0/16": 1, "10.1.0.0/16": 3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, cidrStateFile), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs logRecorder
			log := slog.New(slog.NewMultiHandler(
				slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}),
				hivetest.Logger(t).Handler(),
			))
			e := newPersistentEngine(t, dir)
			e.h.StartTestLogged(log)
			e.addIdentities(t, computeIdentities()...)
			e.restoreRules(t, toCIDR("b", "10.2.0.0/16"), toCIDR("a", "10.1.0.0/16"))

			if !strings.Contains(logs.String(), tc.warning) {
				t.Errorf("no warning %q; logged:\n%s", tc.warning, logs.String())
			}
			// The engine runs, and the file is replaced by a readable one.
			expectCIDRs(t, "identities", e.cidrIdentities(t), tc.want)
			expectCIDRs(t, "file", savedCIDRIdentities(t, dir), tc.want)
		})
	}
}

func TestCIDRIdentitiesSaveRetried(t *testing.T) {
	dir := t.TempDir()
	// A directory in the file's place: reading and replacing it fail.
	blocker := filepath.Join(dir, cidrStateFile)
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	e := newPersistentEngine(t, dir)
	e.h.StartTest()
	e.addIdentities(t, computeIdentities()...)
	e.addRules(t, toCIDR("a", "10.1.0.0/16"))
	wtxn := e.db.WriteTxn(e.rules)
	e.rulesRestored(wtxn)
	wtxn.Commit()

	// The save fails: no CIDR row is committed that the file would not
	// know of, and the engine says why.
	e.waitHealth(t, cell.StatusDegraded, cidrStateFile)
	if rows := e.cidrIdentities(t); len(rows) != 0 {
		t.Errorf("CIDR rows committed before the file was saved: %v", rows)
	}

	// Once the file can be written, the next attempt (at the latest the
	// retry) saves it and writes the rows.
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	e.sync(t)
	want := map[string]tables.NumericIdentity{"10.1.0.0/16": 1}
	expectCIDRs(t, "identities", e.cidrIdentities(t), want)
	expectCIDRs(t, "file", savedCIDRIdentities(t, dir), want)
	e.waitHealth(t, cell.StatusOK, "")
}

// waitHealth waits until the engine reports level with a status holding
// substr; the deadline only turns a hang into a failure.
func (e *testEngine) waitHealth(t *testing.T, level cell.Level, substr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		l, status := e.engineHealth()
		if l == level && strings.Contains(status, substr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine health: %s: %s (want %s with %q)", l, status, level, substr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
