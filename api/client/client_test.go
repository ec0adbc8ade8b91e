package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// request is what the fake agent received.
type request struct {
	method, uri, contentType, body string
}

// fakeAgent serves answer (raw) to every request on a unix socket;
// received returns the requests so far.
func fakeAgent(t *testing.T, answer string) (c *client.Client, received func() []request) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []request
	)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Method, r.RequestURI, r.Header.Get("Content-Type"), string(body)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return client.New(sock), func() []request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestRoutes: each method sends its route and body, and decodes the answer.
func TestRoutes(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		answer string
		call   func(c *client.Client) (any, error)
		want   request
		result any
	}{
		{"ImportPolicy", `{"revision": 3, "rules": 2}`,
			func(c *client.Client) (any, error) {
				return c.ImportPolicy(ctx, "application/yaml", []byte("kind: CiliumNetworkPolicy\n"))
			},
			request{"PUT", "/v1/policy", "application/yaml", "kind: CiliumNetworkPolicy\n"},
			&models.PolicyImportResponse{Revision: 3, Rules: 2}},
		{"GetPolicy", `{"revision": 3, "rules": [{"key": "3/0", "rule": {"endpointSelector": {}}, "revision": 3}]}`,
			func(c *client.Client) (any, error) { return c.GetPolicy(ctx) },
			request{"GET", "/v1/policy", "", ""},
			&models.PolicyRulesResponse{Revision: 3, Rules: []*models.PolicyRule{{Key: "3/0", Rule: json.RawMessage(`{"endpointSelector": {}}`), Revision: 3}}}},
		{"DeletePolicy", `{"revision": 4, "deleted": 1}`,
			func(c *client.Client) (any, error) {
				return c.DeletePolicy(ctx, &models.PolicyDeleteRequest{Labels: []string{"k8s:app=web"}})
			},
			request{"DELETE", "/v1/policy", "application/json", `{"labels":["k8s:app=web"]}`},
			&models.PolicyDeleteResponse{Revision: 4, Deleted: 1}},
		{"TracePolicy", `{"verdict": "denied", "source": {"identity": 256, "labels": ["k8s:app=a"]}}`,
			func(c *client.Client) (any, error) {
				return c.TracePolicy(ctx, &models.PolicyTraceRequest{SrcLabels: []string{"k8s:app=a"}, DstLabels: []string{"k8s:app=b"}, Dport: 80})
			},
			request{"POST", "/v1/policy/trace", "application/json", `{"src-labels":["k8s:app=a"],"dst-labels":["k8s:app=b"],"dport":80}`},
			&models.PolicyTraceResponse{Verdict: "denied", Source: models.PolicyTracePeer{Identity: 256, Labels: []string{"k8s:app=a"}}}},
		{"MonitorStats", `{"received": 5, "subscribers": 1}`,
			func(c *client.Client) (any, error) { return c.MonitorStats(ctx) },
			request{"GET", "/v1/monitor/stats", "", ""},
			&models.MonitorStats{Received: 5, Subscribers: 1}},
		{"GetPod", `{"namespace": "shop", "name": "cart/1", "labels": {"app": "cart"}}`,
			func(c *client.Client) (any, error) { return c.GetPod(ctx, "shop", "cart/1") },
			request{"GET", "/v1/pod/shop/cart%2F1", "", ""},
			&models.Pod{Namespace: "shop", Name: "cart/1", Labels: map[string]string{"app": "cart"}}},
		{"StateDBDump", `{"pods": []}`,
			func(c *client.Client) (any, error) { b, err := c.StateDBDump(ctx, "pods"); return string(b), err },
			request{"GET", "/statedb/dump/pods", "", ""},
			`{"pods": []}`},
		{"StateDBDump all", `{}`,
			func(c *client.Client) (any, error) { b, err := c.StateDBDump(ctx, ""); return string(b), err },
			request{"GET", "/statedb/dump", "", ""},
			`{}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, received := fakeAgent(t, c.answer)
			res, err := c.call(cl)
			if err != nil {
				t.Fatal(err)
			}
			if got := received(); len(got) != 1 || got[0] != c.want {
				t.Errorf("sent %+v, want %+v", got, c.want)
			}
			if !reflect.DeepEqual(res, c.result) {
				t.Errorf("answer %#v, want %#v", res, c.result)
			}
		})
	}
}

// TestMonitor: the filter goes in the query; the stream yields the
// events, skipping blank lines, with each record as the agent wrote it.
func TestMonitor(t *testing.T) {
	records := []string{`{"time":"2025-03-04T12:00:01Z","type":"drop","reason":"policy-denied","endpoint":{"id":7}}`,
		`{"time":"2025-03-04T12:00:02Z","type":"lost","lost":3}`}
	c, received := fakeAgent(t, records[0]+"\n\n  \n"+records[1]+"\n")
	s, err := c.Monitor(context.Background(), models.MonitorFilter{Type: models.MonitorTypeDrop, Endpoint: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if uri := received()[0].uri; uri != "/v1/monitor?endpoint=7&type=drop" {
		t.Errorf("subscribed with %s", uri)
	}
	var types []string
	for i := 0; ; i++ {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Record()) != records[i] {
			t.Errorf("record %d: %s, want %s", i, s.Record(), records[i])
		}
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "drop,lost" {
		t.Errorf("events of types %v", types)
	}

	_, err = client.NewMonitorStream(strings.NewReader("{oops\n")).Next()
	if err == nil || !strings.HasPrefix(err.Error(), "undecodable event from the agent: ") {
		t.Errorf("a record that is not JSON: %v", err)
	}
}
