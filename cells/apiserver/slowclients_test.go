package apiserver

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// A body that does not arrive in time is answered 408 and never reaches
// the handler; a body that does is read whole before the handler runs.
func TestSlowBodyAnswered408(t *testing.T) {
	bodyTimeout = 300 * time.Millisecond
	t.Cleanup(func() { bodyTimeout = bodyTimeoutDefault })
	reached := make(chan string, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reached <- string(b)
		w.WriteHeader(http.StatusNoContent)
	})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: logRequests(slog.New(slog.DiscardHandler), readBodyFirst(h))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	send := func(body string, complete bool) *http.Response {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		length := len(body)
		if !complete {
			length += 100
		}
		fmt.Fprintf(c, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", length, body)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := send("{}", true); resp.StatusCode != http.StatusNoContent {
		t.Errorf("complete body: %s", resp.Status)
	}
	if got := <-reached; got != "{}" {
		t.Errorf("handler read %q", got)
	}
	if resp := send("{", false); resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("incomplete body: %s, want 408", resp.Status)
	}
	select {
	case got := <-reached:
		t.Errorf("the handler ran for an incomplete body (%q)", got)
	default:
	}
}
