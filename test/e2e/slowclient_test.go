package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clients that send a request's headers and then trickle its body (one
// byte every second) hold no limiter slot: with 16 of them connected, a
// pod's ADD and DEL still succeed, and the slow clients are answered 408
// once the body deadline passes.
func TestSlowClientsDoNotBlockPods(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)
	a.putPod("default", "fast", map[string]string{"app": "fast"})

	const slow = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers []string
	)
	stop := make(chan struct{})
	for i := range slow {
		c, err := net.Dial("unix", a.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "PUT /v1/endpoint/0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Trickle, bounded: at most 40 bytes, stop when told.
			go func() {
				for range 40 {
					select {
					case <-stop:
						return
					case <-time.After(time.Second):
					}
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				answers = append(answers, fmt.Sprintf("client %d: %v", i, err))
				return
			}
			resp.Body.Close()
			answers = append(answers, resp.Status)
		}()
	}
	time.Sleep(time.Second) // the slow requests are in

	p := newPod(t, "default", "fast")
	if err := n.add(p); err != nil {
		t.Errorf("ADD while %d clients trickle their bodies: %v", slow, err)
	}
	if err := n.del(p); err != nil {
		t.Errorf("DEL while %d clients trickle their bodies: %v", slow, err)
	}
	wg.Wait()
	close(stop)
	for _, s := range answers {
		if !strings.HasPrefix(s, "408") {
			t.Errorf("a slow client was answered %q, want 408 Request Timeout", s)
		}
	}
	if len(answers) != slow {
		t.Errorf("%d slow clients answered, want %d", len(answers), slow)
	}
}
