package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

// agent is a minimal agent: the infrastructure, the API server and IPAM.
type agent struct {
	h     *celltest.Hive
	db    *statedb.DB
	table statedb.Table[*tables.IPAMAllocation]
	ipam  *IPAM
	api   *client.Client

	stopped bool
}

func startAgent(t *testing.T, stateDir, socket string, cfg Config) *agent {
	t.Helper()
	a := &agent{}
	a.h = celltest.New(t, stateDir,
		apiserver.Cell,
		Cell,
		cell.Invoke(func(db *statedb.DB, tbl statedb.Table[*tables.IPAMAllocation], m *IPAM) {
			a.db, a.table, a.ipam = db, tbl, m
		}),
	)
	hive.AddConfigOverride(a.h.Hive, func(c *apiserver.Config) { c.Socket = socket })
	hive.AddConfigOverride(a.h.Hive, func(c *Config) { *c = cfg })
	log := hivetest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.h.Start(log, ctx); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	t.Cleanup(func() {
		if !a.stopped {
			a.h.Stop(log, context.Background())
		}
	})
	a.api = client.New(socket)
	return a
}

func (a *agent) stop(t *testing.T) {
	t.Helper()
	a.stopped = true
	if err := a.h.Stop(hivetest.Logger(t), context.Background()); err != nil {
		t.Fatalf("agent stop: %v", err)
	}
}

func TestHiveRestartKeepsAllocations(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(t.TempDir(), "api.sock")
	cfg := Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"}
	ctx := context.Background()

	a := startAgent(t, dir, socket, cfg)
	if init, _ := a.table.Initialized(a.db.ReadTxn()); !init {
		t.Fatalf("ipam table not initialized after start, pending: %v", a.table.PendingInitializers(a.db.ReadTxn()))
	}
	// 20 parallel CNI ADDs through the socket, as the plugin sends them.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = a.api.AllocateIP(ctx, &models.IPAMRequest{Owner: fmt.Sprintf("c%d:eth0", i), Pod: fmt.Sprintf("default/p%d", i)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := a.api.ReleaseIP(ctx, "10.9.0.2"); err != nil {
		t.Fatal(err)
	}
	before, err := a.api.ListIPs(ctx)
	if err != nil || len(before) != 39 {
		t.Fatalf("before restart: %d allocations, %v", len(before), err)
	}
	a.stop(t)

	b := startAgent(t, dir, socket, cfg)
	after, err := b.api.ListIPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("after restart %d allocations; before %d", len(after), len(before))
	}
	for i := range before {
		if before[i].IP != after[i].IP || before[i].Owner != after[i].Owner || before[i].Pod != after[i].Pod || !before[i].Created.Equal(after[i].Created) {
			t.Errorf("allocation %d changed across restart: %+v -> %+v", i, before[i], after[i])
		}
	}
	// The table (what `membrane statedb ipam` shows) has them too.
	if n := b.table.NumObjects(b.db.ReadTxn()); n != len(before) {
		t.Errorf("ipam table holds %d rows after restart; want %d", n, len(before))
	}
	// New allocations do not collide with restored ones, and the address
	// released before the restart is not handed out first.
	held := map[string]bool{}
	for _, x := range after {
		held[x.IP] = true
	}
	for i := range 5 {
		res, err := b.api.AllocateIP(ctx, &models.IPAMRequest{Owner: fmt.Sprintf("new%d:eth0", i)})
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range []string{res.IPv4.IP, res.IPv6.IP} {
			if held[ip] {
				t.Fatalf("%s handed out again after restart", ip)
			}
			held[ip] = true
		}
		if res.IPv4.IP == "10.9.0.2" {
			t.Fatalf("the address released before the restart was reused at once")
		}
	}
	// The socket's error mapping reaches the client.
	if err := b.api.ReleaseIP(ctx, "10.9.0.200"); !client.IsStatus(err, http.StatusNotFound) {
		t.Errorf("release of an unallocated address through the socket: %v", err)
	}
}

func TestHiveRejectsBadConfig(t *testing.T) {
	h := celltest.New(t, "", Cell)
	hive.AddConfigOverride(h.Hive, func(c *Config) { c.PodCIDR = "10.9.0.0/31" })
	err := h.Start(hivetest.Logger(t), context.Background())
	if err == nil {
		h.Stop(hivetest.Logger(t), context.Background())
		t.Fatal("agent started with --pod-cidr=10.9.0.0/31")
	}
	if !strings.Contains(err.Error(), "--pod-cidr=10.9.0.0/31 is too small") {
		t.Errorf("start error does not name the flag and the problem: %v", err)
	}
}
