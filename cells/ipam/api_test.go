package ipam

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
)

// newTestServer serves the cell's routes exactly as the API server
// registers them.
func newTestServer(t *testing.T, cfg Config) (*httptest.Server, *IPAM) {
	t.Helper()
	m := newTestIPAM(t, cfg, t.TempDir())
	mux, err := apiserver.NewMux(newRoutes(m).Routes)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, m
}

// do sends a request and returns the status and body; body "" sends none.
func do(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func expect(t *testing.T, what string, code int, body string, wantCode int, wantIn ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: status %d, want %d; body %s", what, code, wantCode, body)
		return
	}
	for _, w := range wantIn {
		if !strings.Contains(body, w) {
			t.Errorf("%s: body %s does not contain %q", what, body, w)
		}
	}
}

func TestAPIAllocate(t *testing.T) {
	srv, _ := newTestServer(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"})

	code, body := do(t, srv, "POST", "/v1/ipam", `{"owner":"c1:eth0","pod":"default/web"}`)
	expect(t, "POST with owner", code, body, http.StatusCreated)
	var res models.IPAMResponse
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	want4 := models.IPAMAddress{IP: "10.9.0.2", Prefix: 24, Gateway: "10.9.0.1", Cidr: "10.9.0.0/24"}
	want6 := models.IPAMAddress{IP: "fd00:9::2", Prefix: 64, Gateway: "fd00:9::1", Cidr: "fd00:9::/64"}
	if res.IPv4 == nil || *res.IPv4 != want4 || res.IPv6 == nil || *res.IPv6 != want6 {
		t.Fatalf("POST answer %s; want ipv4 %+v ipv6 %+v", body, want4, want6)
	}
	// The JSON keys the plugin reads.
	for _, k := range []string{`"ipv4"`, `"ipv6"`, `"ip"`, `"prefix-length"`, `"gateway"`, `"cidr"`} {
		if !strings.Contains(body, k) {
			t.Errorf("answer lacks key %s: %s", k, body)
		}
	}

	code, body = do(t, srv, "POST", "/v1/ipam", "")
	expect(t, "POST without body", code, body, http.StatusCreated, `"10.9.0.3"`)
	code, body = do(t, srv, "POST", "/v1/ipam", "null")
	expect(t, "POST with null body", code, body, http.StatusCreated, `"10.9.0.4"`)
	code, body = do(t, srv, "POST", "/v1/ipam", `{"family":"ipv6"}`)
	expect(t, "POST family ipv6", code, body, http.StatusCreated, `"fd00:9::5"`)
	if strings.Contains(body, `"ipv4"`) {
		t.Errorf("family ipv6 answered an IPv4 address too: %s", body)
	}

	code, body = do(t, srv, "POST", "/v1/ipam", `{"owner":"x","colour":"red"}`)
	expect(t, "unknown field", code, body, http.StatusBadRequest, "colour")
	code, body = do(t, srv, "POST", "/v1/ipam", `{"owner":`)
	expect(t, "malformed JSON", code, body, http.StatusBadRequest)
	code, body = do(t, srv, "POST", "/v1/ipam", `{"family":"ipx"}`)
	expect(t, "bad family", code, body, http.StatusBadRequest, "ipx")
	code, body = do(t, srv, "POST", "/v1/ipam", `{"owner":"`+strings.Repeat("a", 2<<20)+`"}`)
	expect(t, "huge body", code, body, http.StatusRequestEntityTooLarge)
}

func TestAPIExhaustion(t *testing.T) {
	srv, _ := newTestServer(t, Config{PodCIDR: "10.9.0.0/30"})
	code, body := do(t, srv, "POST", "/v1/ipam", `{"owner":"a:eth0"}`)
	expect(t, "first POST", code, body, http.StatusCreated, "10.9.0.2")
	code, body = do(t, srv, "POST", "/v1/ipam", `{"owner":"b:eth0"}`)
	expect(t, "POST on a full CIDR", code, body, http.StatusServiceUnavailable, "10.9.0.0/30", "1 of 1", "--pod-cidr", `"code": 503`)
	code, body = do(t, srv, "POST", "/v1/ipam", `{"family":"ipv6"}`)
	expect(t, "ipv6 on an IPv4-only node", code, body, http.StatusBadRequest, "--pod-cidr-v6")
}

func TestAPIRelease(t *testing.T) {
	srv, _ := newTestServer(t, DefaultConfig)
	code, body := do(t, srv, "POST", "/v1/ipam", `{"owner":"a:eth0","pod":"ns/a"}`)
	expect(t, "POST", code, body, http.StatusCreated, "10.200.0.2")

	code, body = do(t, srv, "DELETE", "/v1/ipam/not-an-ip", "")
	expect(t, "DELETE malformed", code, body, http.StatusBadRequest, "not-an-ip")
	code, body = do(t, srv, "DELETE", "/v1/ipam/10.200.0.1", "")
	expect(t, "DELETE router", code, body, http.StatusBadRequest, "router")
	code, body = do(t, srv, "DELETE", "/v1/ipam/10.200.0.77", "")
	expect(t, "DELETE unallocated", code, body, http.StatusNotFound, "10.200.0.77")
	code, body = do(t, srv, "DELETE", "/v1/ipam/10.200.0.2", "")
	expect(t, "DELETE allocated", code, body, http.StatusOK, `"owner": "a:eth0"`, `"pod": "ns/a"`)
	code, body = do(t, srv, "DELETE", "/v1/ipam/10.200.0.2", "")
	expect(t, "DELETE again", code, body, http.StatusNotFound)
}

func TestAPIList(t *testing.T) {
	srv, m := newTestServer(t, Config{PodCIDR: "10.9.0.0/24", PodCIDRV6: "fd00:9::/64"})
	code, body := do(t, srv, "GET", "/v1/ipam", "")
	expect(t, "GET empty", code, body, http.StatusOK)
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("empty list is %s; want []", body)
	}
	for _, o := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"} {
		mustAllocate(t, m, o+":eth0", AnyFamily)
	}
	// .10 and .2 sort numerically, not as strings.
	if _, err := m.ReleaseOwner("e:eth0"); err != nil {
		t.Fatal(err)
	}
	code, body = do(t, srv, "GET", "/v1/ipam", "")
	expect(t, "GET", code, body, http.StatusOK)
	var all []models.IPAMAllocation
	if err := json.Unmarshal([]byte(body), &all); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range all {
		got = append(got, a.IP)
	}
	want := "10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.7 10.9.0.8 10.9.0.9 10.9.0.10 10.9.0.11 10.9.0.12 " +
		"fd00:9::2 fd00:9::3 fd00:9::4 fd00:9::5 fd00:9::7 fd00:9::8 fd00:9::9 fd00:9::a fd00:9::b fd00:9::c"
	if strings.Join(got, " ") != want {
		t.Errorf("GET /v1/ipam order:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	code, body = do(t, srv, "GET", "/v1/ipam?owner=c:eth0", "")
	expect(t, "GET by owner", code, body, http.StatusOK)
	var mine []models.IPAMAllocation
	if err := json.Unmarshal([]byte(body), &mine); err != nil {
		t.Fatal(err)
	}
	if len(mine) != 2 || mine[0].IP != "10.9.0.4" || mine[1].IP != "fd00:9::4" || mine[0].Owner != "c:eth0" || mine[0].Pod != "default/c:eth0" {
		t.Errorf("GET ?owner=c:eth0 = %s", body)
	}
	code, body = do(t, srv, "GET", "/v1/ipam?owner=nobody", "")
	expect(t, "GET unknown owner", code, body, http.StatusOK)
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("unknown owner lists %s", body)
	}
}
