package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// serve serves h on a new unix socket until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := tempSocket(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// statedbAgent serves a real statedb database holding Membrane's tables
// through the library's HTTP handler, mounted under /statedb/ as the
// agent's API server does.
func statedbAgent(t *testing.T) (string, *statedb.DB) {
	t.Helper()
	db := statedb.New()
	eps, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	ipc, err := tables.NewIPCacheTable(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tables.NewPodsTable(db); err != nil {
		t.Fatal(err)
	}

	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	txn := db.WriteTxn(eps, ipc)
	for _, ep := range []*tables.Endpoint{
		{ID: 17, ContainerID: "c1", ContainerIfName: "eth0", HostIfName: "mb0a", IPv4: netip.MustParseAddr("10.200.0.7"),
			K8sNamespace: "default", K8sPodName: "web", PodLabels: labels.FromMap(map[string]string{"app": "web"}, labels.SourceK8s),
			LabelsResolved: true, Identity: 256, State: tables.StateReady, Created: created,
			Log: []tables.StatusEntry{{Timestamp: created, State: tables.StateReady, Code: "ok", Message: "regenerated"}}},
		{ID: 5, ContainerID: "c2", ContainerIfName: "eth0", HostIfName: "mb0b", IPv4: netip.MustParseAddr("10.200.0.8"),
			State: tables.StateWaitingForIdentity, Created: created},
	} {
		if _, _, err := eps.Insert(txn, ep); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []*tables.IPCacheEntry{
		{Prefix: netip.MustParsePrefix("10.200.0.7/32"), Identity: 256, Source: "endpoint", EndpointID: 17, Status: reconciler.StatusDone()},
		{Prefix: netip.MustParsePrefix("10.200.0.8/32"), Identity: 257, Source: "endpoint", EndpointID: 5,
			Status: reconciler.StatusError(errors.New("map full"))},
	} {
		if _, _, err := ipc.Insert(txn, e); err != nil {
			t.Fatal(err)
		}
	}
	txn.Commit()

	mux := http.NewServeMux()
	mux.Handle("/statedb/", http.StripPrefix("/statedb", db.HTTPHandler()))
	return serve(t, mux), db
}

func TestStatedbTables(t *testing.T) {
	sock, _ := statedbAgent(t)
	wantLines(t, ok(t, "--socket", sock, "statedb"),
		"TABLE       ROWS",
		"endpoints   2",
		"ipcache     2",
		"pods        0",
	)
}

func TestStatedbRows(t *testing.T) {
	sock, _ := statedbAgent(t)

	// Columns picked by JSON key; rows in primary-key order; label objects
	// as source:key=value.
	wantLines(t, ok(t, "--socket", sock, "statedb", "endpoints", "--columns", "id,state,identity,ipv4,pod-labels"),
		"ID   STATE                  IDENTITY   IPV4         POD-LABELS",
		"5    waiting-for-identity   0          10.200.0.8",
		"17   ready                  256        10.200.0.7   k8s:app=web",
	)
	// Reconciler statuses read as their kind.
	wantLines(t, ok(t, "--socket", sock, "statedb", "ipcache"),
		"PREFIX          IDENTITY   SOURCE     ENDPOINT-ID   STATUS",
		"10.200.0.7/32   256        endpoint   17            Done",
		"10.200.0.8/32   257        endpoint   5             Error: map full",
	)

	// Every key of the rows is a column by default, lists of entries are counted.
	out := ok(t, "--socket", sock, "statedb", "endpoints")
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	for _, col := range []string{"ID", "CONTAINER-ID", "INTERFACE-NAME", "K8S-POD-NAME", "STATE", "IDENTITY", "LOG"} {
		if !slices.Contains(header, col) {
			t.Errorf("no column %s in %v", col, header)
		}
	}
	if !strings.Contains(out, "(1 entry)") {
		t.Errorf("the status log should be summarised:\n%s", out)
	}

	// -o json: the rows as the agent sent them.
	var rows []map[string]any
	mustJSON(t, ok(t, "--socket", sock, "statedb", "ipcache", "-o", "json"), &rows)
	if len(rows) != 2 || rows[0]["prefix"] != "10.200.0.7/32" || rows[1]["status"].(map[string]any)["error"] != "map full" {
		t.Fatalf("rows %v", rows)
	}
	var eps []tables.Endpoint
	mustJSON(t, ok(t, "--socket", sock, "statedb", "endpoints", "-o", "json"), &eps)
	if len(eps) != 2 || eps[1].ID != 17 || eps[1].Identity != 256 {
		t.Fatalf("endpoints %+v", eps)
	}
	if y := ok(t, "--socket", sock, "statedb", "ipcache", "-o", "yaml"); !strings.Contains(y, "prefix: 10.200.0.7/32") {
		t.Fatalf("YAML:\n%s", y)
	}

	// An empty table says so on stderr and prints nothing.
	r := run(t, "", "--socket", sock, "statedb", "pods")
	if r.code != 0 || r.stdout != "" || r.stderr != "statedb table pods has no rows\n" {
		t.Fatalf("empty table: %+v", r)
	}
	wantLines(t, ok(t, "--socket", sock, "statedb", "pods", "-o", "json"), "[]")
}

// sparseRow has a field its first row omits.
type sparseRow struct {
	Name  string `json:"name"`
	Extra string `json:"extra,omitempty"`
	Count int    `json:"count"`
}

func (r *sparseRow) TableHeader() []string { return []string{"Name"} }
func (r *sparseRow) TableRow() []string    { return []string{r.Name} }

func TestStatedbColumnOrder(t *testing.T) {
	db := statedb.New()
	tbl, err := statedb.NewTable(db, "sparse", statedb.Index[*sparseRow, string]{
		Name:       "name",
		FromObject: func(r *sparseRow) index.KeySet { return index.NewKeySet(index.String(r.Name)) },
		FromKey:    index.String,
		FromString: index.FromString,
		Unique:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	txn := db.WriteTxn(tbl)
	tbl.Insert(txn, &sparseRow{Name: "a", Count: 1})
	tbl.Insert(txn, &sparseRow{Name: "b", Extra: "x", Count: 2})
	txn.Commit()
	mux := http.NewServeMux()
	mux.Handle("/statedb/", http.StripPrefix("/statedb", db.HTTPHandler()))
	sock := serve(t, mux)

	// EXTRA keeps its place between NAME and COUNT though row a omits it.
	wantLines(t, ok(t, "--socket", sock, "statedb", "sparse"),
		"NAME   EXTRA   COUNT",
		"a              1",
		"b      x       2",
	)
}

func TestStatedbErrors(t *testing.T) {
	sock, _ := statedbAgent(t)
	e := fails(t, "--socket", sock, "statedb", "endpoint")
	if want := `Error: the agent has no statedb table "endpoint" (its tables: endpoints, ipcache, pods)`; !strings.HasPrefix(e, want) {
		t.Errorf("stderr %q, want %q", e, want)
	}
	e = fails(t, "--socket", sock, "statedb", "ipcache", "--columns", "prefix,bogus")
	if !strings.Contains(e, `statedb table ipcache has no column "bogus" (its columns: prefix, identity, source, endpoint-id, status)`) {
		t.Errorf("stderr %q", e)
	}
}

func TestCellText(t *testing.T) {
	for in, want := range map[string]string{
		`null`:                       "",
		`"a\nb"`:                     "a b",
		`12`:                         "12",
		`true`:                       "true",
		`[]`:                         "",
		`["a","b"]`:                  "a\nb",
		`[1,2]`:                      "1\n2",
		`{"source":"k8s","key":"a"}`: "k8s:a",
		`[{"x":1},{"y":2}]`:          "(2 entries)",
		`{"b":1,"a":[1, 2]}`:         `{"b":1,"a":[1,2]}`,
		`{"kind":"Pending","updated-at":"2025-01-01T00:00:00Z","id":3}`: "Pending",
	} {
		if got := cellText(json.RawMessage(in)); got != want {
			t.Errorf("cellText(%s) = %q, want %q", in, got, want)
		}
	}
}
