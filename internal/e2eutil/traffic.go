package e2eutil

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
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

// Traffic comes from the suite's test binary itself, re-executed inside a
// pod's network namespace with ToolEnv naming the role: a server that
// answers TCP and UDP ("serve PORT..."), a TCP client ("tcp ADDR [SRC]")
// a UDP client ("udp ADDR [SIZE]"), one that prints the source address the
// server saw ("udp-from ADDR"), a TCP client that connects again and again
// until interrupted ("tcp-loop ADDR"), one long TCP connection whose every
// byte is checked ("stream-recv PORT", "stream-send ADDR") and a prober that tries many
// addresses at once ("probe tcp|udp ADDR..."). Every client gives up after a
// second; servers live until the test ends.

// ToolEnv names the tool the test binary runs as. A suite's TestMain
// checks it before anything else and hands over to RunTool.
const ToolEnv = "MEMBRANE_E2E_TOOL"

// RunTool runs tool with args and returns the process's exit code.
func RunTool(tool string, args []string) int {
	var err error
	switch tool {
	case "serve":
		err = serve(args)
	case "tcp":
		err = tcpClient(args)
	case "udp":
		err = udpClient(args)
	case "tcp-loop":
		err = tcpLoop(args)
	case "probe":
		err = probe(args)
	case "udp-from":
		err = udpFrom(args)
	case "stream-recv":
		err = streamRecv(args)
	case "stream-send":
		err = streamSend(args)
	default:
		err = fmt.Errorf("unknown tool %q", tool)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// serve answers "ok" on TCP and echoes UDP on every port given, on all
// addresses of both families.
func serve(ports []string) error {
	errc := make(chan error, 4*len(ports))
	// One socket per family: a fresh netns has lo down, so Go's probe for
	// dual-stack sockets fails and ":port" would be IPv4 only.
	for _, p := range ports {
		for _, fam := range []struct{ tcp, udp, any string }{{"tcp4", "udp4", "0.0.0.0"}, {"tcp6", "udp6", "::"}} {
			ln, err := net.Listen(fam.tcp, net.JoinHostPort(fam.any, p))
			if err != nil {
				return err
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						errc <- err
						return
					}
					c.Write([]byte("ok\n"))
					c.Close()
				}
			}()
			pc, err := net.ListenPacket(fam.udp, net.JoinHostPort(fam.any, p))
			if err != nil {
				return err
			}
			go func() {
				buf := make([]byte, 65536) // whole datagrams, fragmented ones too
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						errc <- err
						return
					}
					if string(buf[:n]) == "whoami" {
						// Says what source address arrived (no masquerade?).
						pc.WriteTo([]byte(from.(*net.UDPAddr).IP.String()), from)
						continue
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
	}
	fmt.Println("ready")
	return <-errc
}

// dialer binds to args[1] when given (for spoofing tests).
func dialer(args []string) *net.Dialer {
	d := &net.Dialer{Timeout: time.Second}
	if len(args) > 1 && args[1] != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(args[1])}
	}
	return d
}

// tcpClient connects to args[0] ("ip:port" or "[ip]:port") and expects "ok".
func tcpClient(args []string) error {
	c, err := dialer(args).Dial("tcp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ok\n" {
		return fmt.Errorf("no answer from %s: %v", args[0], err)
	}
	return nil
}

// tcpLoop opens one new connection after another to args[0], each a new
// flow that the datapath judges by policy (not conntrack), until SIGINT or
// 20 seconds, and prints how many were made and how many failed.
func tcpLoop(args []string) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	deadline := time.After(20 * time.Second)
	attempts, failed := 0, 0
	var firstErr error
	for {
		select {
		case <-stop:
			fmt.Printf("attempts=%d failed=%d first-error=%v\n", attempts, failed, firstErr)
			return nil
		case <-deadline:
			return fmt.Errorf("not stopped within 20s (attempts=%d failed=%d)", attempts, failed)
		default:
		}
		attempts++
		if err := tcpClient(args[:1]); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// probe tries args[1:] in parallel with the TCP (args[0] "tcp") or UDP
// client and prints one line per address: "ADDR ok" or "ADDR fail".
func probe(args []string) error {
	if len(args) < 1 || (args[0] != "tcp" && args[0] != "udp") {
		return fmt.Errorf("usage: probe tcp|udp ADDR...")
	}
	client := tcpClient
	if args[0] == "udp" {
		client = udpClient
	}
	results := make([]string, len(args)-1)
	var wg sync.WaitGroup
	for i, addr := range args[1:] {
		wg.Go(func() {
			results[i] = addr + " ok"
			if client([]string{addr}) != nil {
				results[i] = addr + " fail"
			}
		})
	}
	wg.Wait()
	fmt.Println(strings.Join(results, "\n"))
	return nil
}

// udpExchange sends payload to addr and returns the answer.
func udpExchange(addr string, payload []byte) ([]byte, error) {
	c, err := net.DialTimeout("udp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(payload); err != nil {
		return nil, err
	}
	buf := make([]byte, max(len(payload)+1, 128))
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("no answer from %s: %v", addr, err)
	}
	return buf[:n], nil
}

// udpClient sends a datagram to args[0], of args[1] bytes if given (4
// by default; larger than the MTU, it leaves fragmented), and waits for
// its echo.
func udpClient(args []string) error {
	size := 4
	if len(args) > 1 {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 || n > 65000 {
			return fmt.Errorf("datagram size %q: want 1-65000", args[1])
		}
		size = n
	}
	msg := []byte(strings.Repeat("ping", size/4+1)[:size])
	got, err := udpExchange(args[0], msg)
	if err == nil && !bytes.Equal(got, msg) {
		err = fmt.Errorf("no echo of %d bytes from %s: %d bytes", size, args[0], len(got))
	}
	return err
}

// udpFrom asks the server at args[0] which source address its datagram
// came from, and prints it.
func udpFrom(args []string) error {
	got, err := udpExchange(args[0], []byte("whoami"))
	if err == nil {
		fmt.Println(string(got))
	}
	return err
}

// SourceSeenBy returns the source address a UDP server (StartServer) at
// addr saw a datagram from the namespace come from.
func (ns Netns) SourceSeenBy(addr string) (string, error) {
	out, err := ns.Tool(context.Background(), "udp-from", addr).Output()
	return strings.TrimSpace(string(out)), err
}

// Netns is a network namespace the tools run in.
type Netns struct {
	// Name is what messages call it: the pod's name.
	Name string
	// Exec is the command that runs a program inside it.
	Exec []string
}

// IPNetns is the namespace `ip netns add NETNSNAME` made.
func IPNetns(name, netnsName string) Netns {
	return Netns{Name: name, Exec: []string{"ip", "netns", "exec", netnsName}}
}

// NsenterNetns is the namespace bound at path (a runtime's netns).
func NsenterNetns(name, path string) Netns {
	return Netns{Name: name, Exec: []string{"nsenter", "--net=" + path}}
}

// Command runs argv inside the namespace.
func (ns Netns) Command(ctx context.Context, argv ...string) *exec.Cmd {
	all := append(append([]string{}, ns.Exec...), argv...)
	return exec.CommandContext(ctx, all[0], all[1:]...)
}

// Tool runs this test binary as tool inside the namespace.
func (ns Netns) Tool(ctx context.Context, tool string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := ns.Command(ctx, append([]string{self}, args...)...)
	cmd.Env = append(os.Environ(), ToolEnv+"="+tool)
	return cmd
}

var serverMu sync.Mutex

// StartServer runs the server tool in the namespace, on ports, until the
// test ends (killed by its PID at cleanup).
func (ns Netns) StartServer(tb testing.TB, ports ...string) {
	tb.Helper()
	serverMu.Lock()
	defer serverMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Tool(ctx, "serve", ports...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = errors.New(line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			tb.Fatalf("server in %s: %v: %s", ns.Name, err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		tb.Fatalf("server in %s did not start: %s", ns.Name, stderr.String())
	}
}

// CanTCP reports whether a TCP connection from the namespace to addr
// ("ip:port", "[ip]:port") gets the server's answer.
func (ns Netns) CanTCP(addr string) bool {
	return ns.Tool(context.Background(), "tcp", addr).Run() == nil
}

// CanTCPFrom is CanTCP with the client bound to src first (spoofing).
func (ns Netns) CanTCPFrom(src, addr string) bool {
	return ns.Tool(context.Background(), "tcp", addr, src).Run() == nil
}

// CanUDP reports whether a datagram from the namespace to addr gets its
// echo.
func (ns Netns) CanUDP(addr string) bool {
	return ns.Tool(context.Background(), "udp", addr).Run() == nil
}

// CanUDPSize is CanUDP with a datagram of size bytes (larger than the
// MTU: fragmented, both ways).
func (ns Netns) CanUDPSize(addr string, size int) bool {
	return ns.Tool(context.Background(), "udp", addr, strconv.Itoa(size)).Run() == nil
}

// Probe tries every address ("ip:port") from the namespace at once, over
// proto ("tcp" or "udp"), and reports which answered.
func (ns Netns) Probe(proto string, addrs []string) (map[string]bool, error) {
	out, err := ns.Tool(context.Background(), "probe", append([]string{proto}, addrs...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("probe from %s: %w", ns.Name, err)
	}
	got := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		addr, verdict, _ := strings.Cut(strings.TrimSpace(line), " ")
		got[addr] = verdict == "ok"
	}
	if len(got) != len(addrs) {
		return nil, fmt.Errorf("probe from %s: %d answers for %d addresses: %s", ns.Name, len(got), len(addrs), out)
	}
	return got, nil
}

// CanPing reports whether the namespace gets an ICMP echo reply from ip
// (one try, a second: the suites assert drops too).
func (ns Netns) CanPing(ip string) bool {
	return ns.Command(context.Background(), "ping", "-c", "1", "-W", "1", ip).Run() == nil
}

// CanPingSize is CanPing with size bytes of ICMP payload (ping -s; larger
// than the MTU, request and reply are fragmented).
func (ns Netns) CanPingSize(ip string, size int) bool {
	return ns.Command(context.Background(), "ping", "-c", "1", "-W", "1", "-s", strconv.Itoa(size), ip).Run() == nil
}
