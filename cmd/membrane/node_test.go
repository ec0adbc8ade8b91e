package main

import (
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/statedb/tables"
)

// `membrane node list` reads the agent's nodes table (the schema's JSON,
// decoded by the CLI's own struct: this test keeps the two in step).
func TestNodeList(t *testing.T) {
	db := statedb.New()
	nodes, err := tables.NewNodesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	addr, pfx := netip.MustParseAddr, netip.MustParsePrefix
	txn := db.WriteTxn(nodes)
	for _, n := range []*tables.Node{
		{Name: "a", Local: true, InternalIPs: []netip.Addr{addr("192.168.1.1")}, PodCIDRs: []netip.Prefix{pfx("10.1.0.0/24")}, UpdatedAt: at, RouteStatus: reconciler.StatusDone()},
		{Name: "b", InternalIPs: []netip.Addr{addr("192.168.1.2")}, OtherIPs: []netip.Addr{addr("203.0.113.2")},
			PodCIDRs: []netip.Prefix{pfx("10.2.0.0/24"), pfx("fd00:2::/64")}, UpdatedAt: at, RouteStatus: reconciler.StatusDone()},
		{Name: "c", InternalIPs: []netip.Addr{addr("192.168.1.3")}, PodCIDRs: []netip.Prefix{pfx("10.2.0.0/25")}, UpdatedAt: at,
			Refused: "pod CIDR 10.2.0.0/25 overlaps 10.2.0.0/24 of node b", RouteStatus: reconciler.StatusDone()},
		{Name: "d", InternalIPs: []netip.Addr{addr("172.16.0.4")}, PodCIDRs: []netip.Prefix{pfx("10.4.0.0/24")}, UpdatedAt: at,
			RouteStatus: reconciler.StatusError(errors.New("network is unreachable"))},
		{Name: "e", InternalIPs: []netip.Addr{addr("192.168.1.5")}, PodCIDRs: []netip.Prefix{pfx("10.5.0.0/24")}, UpdatedAt: at,
			RouteStatus: reconciler.StatusPending()},
	} {
		if _, _, err := nodes.Insert(txn, n); err != nil {
			t.Fatal(err)
		}
	}
	txn.Commit()
	mux := http.NewServeMux()
	mux.Handle("/statedb/", http.StripPrefix("/statedb", db.HTTPHandler()))
	sock := serve(t, mux)

	wantLines(t, ok(t, "--socket", sock, "node", "list"),
		"NAME        ADDRESSES     POD CIDRS     ROUTES                                                         UPDATED",
		"a (local)   192.168.1.1   10.1.0.0/24   local                                                          2026-01-02T03:04:05Z",
		"b           192.168.1.2   10.2.0.0/24   installed                                                      2026-01-02T03:04:05Z",
		"            203.0.113.2   fd00:2::/64",
		"c           192.168.1.3   10.2.0.0/25   refused: pod CIDR 10.2.0.0/25 overlaps 10.2.0.0/24 of node b   2026-01-02T03:04:05Z",
		"d           172.16.0.4    10.4.0.0/24   error: network is unreachable                                  2026-01-02T03:04:05Z",
		"e           192.168.1.5   10.5.0.0/24   pending                                                        2026-01-02T03:04:05Z",
	)
	var rows []nodeInfo
	mustJSON(t, ok(t, "--socket", sock, "node", "list", "-o", "json"), &rows)
	if len(rows) != 5 || rows[1].Name != "b" || len(rows[1].Addresses) != 2 || rows[1].Routes != "installed" || !rows[0].Local {
		t.Fatalf("rows %+v", rows)
	}
}
