package cniconfig

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/statedir"
)

// newHive is the API server and this cell; before puts this cell first
// in the list, to show the order does not depend on the listing.
func newHive(t *testing.T, socket string, cfg Config, before bool) *hive.Hive {
	t.Helper()
	state := cell.Config(statedir.Config{StateDir: "/var/lib/membrane"})
	cs := []cell.Cell{statedb.Cell, state, apiserver.Cell, Cell}
	if before {
		cs = []cell.Cell{statedb.Cell, state, Cell, apiserver.Cell}
	}
	h := hive.New(cs...)
	hive.AddConfigOverride(h, func(c *apiserver.Config) { c.Socket = socket })
	hive.AddConfigOverride(h, func(c *Config) { *c = cfg })
	return h
}

func start(t *testing.T, h *hive.Hive) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(hivetest.Logger(t), ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
}

func stop(t *testing.T, h *hive.Hive) {
	t.Helper()
	if err := h.Stop(hivetest.Logger(t), context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func readConflist(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", path, err, raw)
	}
	return m
}

// TestConflistAppearsOnlyWhenServing: whenever the conflist exists, the
// socket it names accepts connections, whatever the order the cells are
// listed in; the file is complete, 0644, and stays when the agent stops.
func TestConflistAppearsOnlyWhenServing(t *testing.T) {
	for _, before := range []bool{false, true} {
		t.Run(map[bool]string{false: "listed-after-api", true: "listed-before-api"}[before], func(t *testing.T) {
			dir := t.TempDir()
			socket := filepath.Join(dir, "run", "membrane.sock")
			path := filepath.Join(dir, "etc", "cni", "net.d", "05-membrane.conflist")
			h := newHive(t, socket, Config{WriteCNIConfWhenReady: path, CNIMTU: 1400}, before)

			// Watch for the file while the agent starts; the moment it
			// shows up, the socket must already accept connections.
			seen := make(chan error, 1)
			done := make(chan struct{})
			go func() {
				for {
					select {
					case <-done:
						seen <- nil
						return
					default:
					}
					if _, err := os.Stat(path); err == nil {
						c, err := net.Dial("unix", socket)
						if err == nil {
							c.Close()
						}
						seen <- err
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
			}()
			start(t, h)
			time.Sleep(10 * time.Millisecond)
			close(done)
			if err := <-seen; err != nil {
				t.Fatalf("the conflist existed while its socket refused connections: %v", err)
			}

			got := readConflist(t, path)
			want := map[string]any{
				"cniVersion":  CNIVersion,
				"cniVersions": []any{"1.0.0", "1.1.0"},
				"name":        "membrane",
				"plugins":     []any{map[string]any{"type": "membrane-cni", "socket": socket, "stateDir": "/var/lib/membrane", "mtu": float64(1400)}},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("conflist:\n got %v\nwant %v", got, want)
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o644 {
				t.Errorf("conflist mode %v, want 0644 (runtimes may read it as another user)", st.Mode().Perm())
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("the conflist directory holds %d entries, want the conflist only (no temporary files)", len(entries))
			}

			stop(t, h)
			if _, err := os.Stat(path); err != nil {
				t.Errorf("the conflist must survive a stop by default (a restarting agent keeps the node's network): %v", err)
			}
		})
	}
}

// TestNoConflistWhenTheAPIFails: an agent that cannot serve never
// advertises itself to the runtime.
func TestNoConflistWhenTheAPIFails(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "net.d", "05-membrane.conflist")
	h := newHive(t, filepath.Join(notADir, "membrane.sock"), Config{WriteCNIConfWhenReady: path, CNIMTU: 1500}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(hivetest.Logger(t), ctx); err == nil {
		h.Stop(hivetest.Logger(t), context.Background())
		t.Fatal("the agent started with an impossible socket path")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the conflist was written although the API never served: %v", err)
	}
}

func TestReplacesAStaleConflistAndRemovesItOnShutdownIfAsked(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "membrane.sock")
	path := filepath.Join(dir, "05-membrane.conflist")
	if err := os.WriteFile(path, []byte(`{"stale": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHive(t, socket, Config{WriteCNIConfWhenReady: path, CNIMTU: 1500, CNIConfLoopback: true, RemoveCNIConfOnShutdown: true}, false)
	start(t, h)
	got := readConflist(t, path)
	plugins, _ := got["plugins"].([]any)
	if len(plugins) != 2 || plugins[1].(map[string]any)["type"] != "loopback" {
		t.Errorf("with --cni-conf-loopback the chain is membrane-cni then loopback, got %v", plugins)
	}
	stop(t, h)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("--remove-cni-conf-on-shutdown: the conflist is still there (%v)", err)
	}
}

func TestLeavesAConflistSomebodyElseRewrote(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "05-membrane.conflist")
	h := newHive(t, filepath.Join(dir, "membrane.sock"), Config{WriteCNIConfWhenReady: path, CNIMTU: 1500, RemoveCNIConfOnShutdown: true}, false)
	start(t, h)
	if err := os.WriteFile(path, []byte(`{"edited": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	stop(t, h)
	if raw, err := os.ReadFile(path); err != nil || !strings.Contains(string(raw), "edited") {
		t.Fatalf("an edited conflist must not be removed: %q, %v", raw, err)
	}
}

func TestNothingWrittenByDefault(t *testing.T) {
	dir := t.TempDir()
	h := newHive(t, filepath.Join(dir, "membrane.sock"), DefaultConfig, false)
	start(t, h)
	stop(t, h)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("without --write-cni-conf-when-ready nothing is written, found %v", entries)
	}

	bad := newHive(t, filepath.Join(dir, "membrane.sock"), Config{CNIMTU: 1500, RemoveCNIConfOnShutdown: true}, false)
	if err := bad.Start(hivetest.Logger(t), context.Background()); err == nil {
		bad.Stop(hivetest.Logger(t), context.Background())
		t.Error("--remove-cni-conf-on-shutdown without a path must be refused")
	}
}

func TestConflistRefusesWhatThePluginWould(t *testing.T) {
	for _, c := range []Conf{
		{Socket: "relative.sock", StateDir: "/var/lib/membrane", MTU: 1500},
		{Socket: "/run/m.sock", StateDir: "state", MTU: 1500},
		{Socket: "/run/m.sock", StateDir: "/var/lib/membrane", MTU: 20},
		{Socket: "/run/m.sock", StateDir: "/var/lib/membrane", MTU: 70000},
	} {
		if _, err := Conflist(c); err == nil {
			t.Errorf("Conflist(%+v) accepted", c)
		}
	}
}
