package e2eutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A stream is one TCP connection kept open across an event (an agent
// killed and restarted, an API server outage): the sender writes a
// numbered line every streamPace until interrupted, then an END line with
// the count; the receiver checks that every line arrives, in order and
// whole, and answers the count. A reset, a lost or reordered byte, a
// stall longer than streamStall fails it.

const (
	streamPace    = 10 * time.Millisecond
	streamStall   = 10 * time.Second
	streamMaxLife = 2 * time.Minute
	// streamPayload pads each line so that a lost or duplicated byte
	// shows as a malformed line.
	streamPayload = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// streamRecv accepts one connection on args[0] and checks it.
func streamRecv(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: stream-recv PORT")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", args[0]))
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println("ready")
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(streamMaxLife))
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for next := 0; ; next++ {
		c.SetReadDeadline(time.Now().Add(streamStall))
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("after %d lines: %w", next, err)
		}
		if n, ok := strings.CutPrefix(line, "END "); ok {
			if n != strconv.Itoa(next)+"\n" {
				return fmt.Errorf("sender sent %s lines, %d arrived", strings.TrimSpace(n), next)
			}
			c.SetWriteDeadline(time.Now().Add(streamStall))
			if _, err := fmt.Fprintf(c, "ok %d\n", next); err != nil {
				return err
			}
			fmt.Printf("received=%d\n", next)
			return nil
		}
		if want := fmt.Sprintf("%d %s\n", next, streamPayload); line != want {
			return fmt.Errorf("line %d is %q, want %q", next, line, want)
		}
	}
}

// streamSend connects to args[0] and sends until SIGINT (or
// streamMaxLife), then ends the stream and waits for the receiver's count.
func streamSend(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: stream-send ADDR")
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	c, err := net.DialTimeout("tcp", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("connected")
	tick := time.NewTicker(streamPace)
	defer tick.Stop()
	deadline := time.After(streamMaxLife)
	sent := 0
	for {
		select {
		case <-stop:
			c.SetDeadline(time.Now().Add(streamStall))
			if _, err := fmt.Fprintf(c, "END %d\n", sent); err != nil {
				return fmt.Errorf("after %d lines: %w", sent, err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != fmt.Sprintf("ok %d\n", sent) {
				return fmt.Errorf("receiver's answer to %d lines: %q %v", sent, line, err)
			}
			fmt.Printf("sent=%d\n", sent)
			return nil
		case <-deadline:
			return fmt.Errorf("not stopped within %s (%d lines sent)", streamMaxLife, sent)
		case <-tick.C:
		}
		c.SetWriteDeadline(time.Now().Add(streamStall))
		if _, err := fmt.Fprintf(c, "%d %s\n", sent, streamPayload); err != nil {
			return fmt.Errorf("after %d lines: %w", sent, err)
		}
		sent++
	}
}

// Stream is a running stream from one namespace to another.
type Stream struct {
	send, recv       *runningTool
	sendOut, recvOut *strings.Builder
}

type runningTool struct {
	cmd    *exec.Cmd
	done   chan error
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

// wait returns how the tool exited (once it has), as often as asked.
func (t *runningTool) wait() error {
	t.once.Do(func() { t.err = <-t.done })
	return t.err
}

// StartStream starts a receiver on port in to and a sender from from to
// addr ("ip:port", an address of to) and returns once they are connected.
// Both are killed when the test ends.
func StartStream(tb testing.TB, from, to Netns, addr, port string) *Stream {
	tb.Helper()
	s := &Stream{sendOut: &strings.Builder{}, recvOut: &strings.Builder{}}
	var err error
	if s.recv, err = startTool(tb, to, s.recvOut, "ready\n", "stream-recv", port); err != nil {
		tb.Fatalf("stream receiver in %s: %v", to.Name, err)
	}
	if s.send, err = startTool(tb, from, s.sendOut, "connected\n", "stream-send", addr); err != nil {
		tb.Fatalf("stream sender in %s to %s: %v", from.Name, addr, err)
	}
	return s
}

// Finish ends the stream and returns the number of lines that arrived,
// or why the stream broke.
func (s *Stream) Finish() (int, error) {
	s.send.cmd.Process.Signal(os.Interrupt)
	sendErr := s.send.wait()
	recvErr := s.recv.wait()
	if sendErr != nil || recvErr != nil {
		return 0, fmt.Errorf("sender: %v: %s; receiver: %v: %s", sendErr, s.sendOut, recvErr, s.recvOut)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(lastLine(s.recvOut.String())), "received="))
	if err != nil {
		return 0, fmt.Errorf("receiver's summary: %q", s.recvOut)
	}
	return n, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// startTool runs a tool in ns and waits (bounded) until its first output
// line is first; everything it prints goes to out.
func startTool(tb testing.TB, ns Netns, out *strings.Builder, first, tool string, args ...string) (*runningTool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamMaxLife+time.Minute)
	cmd := ns.Tool(ctx, tool, args...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	var stderr strings.Builder // read once the tool has exited
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	t := &runningTool{cmd: cmd, done: make(chan error, 1), cancel: cancel}
	tb.Cleanup(func() { cancel(); t.wait() })
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(pipe)
		line, _ := r.ReadString('\n')
		lines <- line
		rest, _ := io.ReadAll(r)
		err := cmd.Wait()
		out.WriteString(line)
		out.Write(rest)
		out.WriteString(stderr.String())
		t.done <- err
	}()
	select {
	case line := <-lines:
		if line != first {
			cancel()
			t.wait()
			return nil, fmt.Errorf("%s: %q: %s", tool, line, stderr.String())
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.wait()
		return nil, fmt.Errorf("%s did not start within 10s: %s", tool, stderr.String())
	}
	return t, nil
}
