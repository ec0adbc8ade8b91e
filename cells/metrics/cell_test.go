package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/internal/celltest"
	"github.com/membrane-net/membrane/statedb/tables"
)

func TestParseAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:9962":     true,
		"[::1]:9962":         true,
		"localhost:9962":     true,
		"10.1.2.3:9962":      true,
		"unix:/run/m.sock":   true,
		":9962":              false, // every address
		"0.0.0.0:9962":       false,
		"[::]:9962":          false,
		"unix:relative.sock": false,
		"127.0.0.1":          false, // no port
	} {
		_, _, err := parseAddr(addr)
		if (err == nil) != ok {
			t.Errorf("parseAddr(%q): error %v, want ok=%v", addr, err, ok)
		}
	}
}

// scrape fetches /metrics over the unix socket and returns the
// exposition's families by name.
func scrape(t *testing.T, sock string) map[string]float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://metrics/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v: %s", resp.StatusCode, err, body)
	}
	// The text format: "name{label="value",...} value" per sample.
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestCellServesTablesAndStatedb(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	var endpoints statedb.RWTable[*tables.Endpoint]
	h := celltest.New(t, "", Cell, cellInvoke(&endpoints))
	hive.AddConfigOverride(h.Hive, func(c *Config) { c.PrometheusServeAddr = "unix:" + sock })
	h.StartTest()

	got := scrape(t, sock)
	for _, key := range []string{`membrane_endpoints{state="ready"}`, `membrane_identities{kind="reserved"}`, "membrane_policy_revision"} {
		if _, ok := got[key]; !ok {
			t.Errorf("no %s in the exposition", key)
		}
	}
	if got[`membrane_endpoints{state="ready"}`] != 0 {
		t.Errorf("ready endpoints = %v before any, want 0", got[`membrane_endpoints{state="ready"}`])
	}

	wtxn := h.DB.WriteTxn(endpoints)
	for _, ep := range []*tables.Endpoint{{ID: 7, State: tables.StateReady}, {ID: 8, State: tables.StateWaitingForIdentity}} {
		if _, _, err := endpoints.Insert(wtxn, ep); err != nil {
			t.Fatal(err)
		}
	}
	wtxn.Commit()

	got = scrape(t, sock)
	if got[`membrane_endpoints{state="ready"}`] != 1 || got[`membrane_endpoints{state="waiting-for-identity"}`] != 1 {
		t.Errorf("endpoints by state after two: ready %v, waiting-for-identity %v; want 1 and 1",
			got[`membrane_endpoints{state="ready"}`], got[`membrane_endpoints{state="waiting-for-identity"}`])
	}
	// statedb's own metrics, through the Metrics the database took from the hive.
	if got[`membrane_statedb_table_objects{table="endpoints"}`] != 2 {
		t.Errorf("membrane_statedb_table_objects{table=endpoints} = %v, want 2", got[`membrane_statedb_table_objects{table="endpoints"}`])
	}
}

// A hive without the flag serves nothing and the database keeps its own
// metrics.
func TestCellOffByDefault(t *testing.T) {
	var endpoints statedb.RWTable[*tables.Endpoint]
	h := celltest.New(t, "", Cell, cellInvoke(&endpoints))
	h.StartTest()
}

func cellInvoke(tbl *statedb.RWTable[*tables.Endpoint]) cell.Cell {
	return cell.Invoke(func(t statedb.RWTable[*tables.Endpoint]) { *tbl = t })
}
