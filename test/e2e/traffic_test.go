package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Traffic for the policy suites comes from this test binary itself,
// re-executed inside a pod's netns (`ip netns exec NS TESTBINARY`) with
// MEMBRANE_E2E_TOOL naming the role: a server that answers TCP and UDP, a
// TCP client, a UDP client. Every client gives up after a second; servers
// live until the test kills them.

const toolEnv = "MEMBRANE_E2E_TOOL"

// runTool is called by TestMain when the binary runs as a tool.
func runTool(tool string, args []string) int {
	var err error
	switch tool {
	case "serve":
		err = serve(args)
	case "tcp":
		err = tcpClient(args)
	case "udp":
		err = udpClient(args)
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
				buf := make([]byte, 1500)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						errc <- err
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
	}
	fmt.Println("ready")
	return <-errc
}

// dialer binds to args[1] when given (for the spoofing test).
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

// udpClient sends a datagram to args[0] and waits for its echo.
func udpClient(args []string) error {
	c, err := net.DialTimeout("udp", args[0], time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		return fmt.Errorf("no echo from %s: %v", args[0], err)
	}
	return nil
}

// inPod runs this binary as tool in p's netns.
func inPod(ctx context.Context, p *pod, tool string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.NetnsName, self}, args...)...)
	cmd.Env = append(os.Environ(), toolEnv+"="+tool)
	return cmd
}

var serverMu sync.Mutex

// startServer runs the server tool in p's netns until the test ends.
func startServer(t *testing.T, p *pod, ports ...string) {
	t.Helper()
	serverMu.Lock()
	defer serverMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := inPod(ctx, p, "serve", ports...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
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
			t.Fatalf("server in %s: %v: %s", p.Name, err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server in %s did not start: %s", p.Name, stderr.String())
	}
}

func hostPort(ip, port string) string { return net.JoinHostPort(ip, port) }

// canTCP reports whether from can open a TCP connection to ip:port.
func canTCP(from *pod, ip, port string) bool {
	return inPod(context.Background(), from, "tcp", hostPort(ip, port)).Run() == nil
}

// canTCPFrom binds the client to src first (spoofing test).
func canTCPFrom(from *pod, src, ip, port string) bool {
	return inPod(context.Background(), from, "tcp", hostPort(ip, port), src).Run() == nil
}

// canUDP reports whether from gets an echo from ip:port.
func canUDP(from *pod, ip, port string) bool {
	return inPod(context.Background(), from, "udp", hostPort(ip, port)).Run() == nil
}

// canPing reports whether from gets an ICMP echo reply from ip (one try:
// the suites assert drops too).
func canPing(from *pod, ip string) bool {
	return exec.Command("ip", "netns", "exec", from.NetnsName, "ping", "-c", "1", "-W", "1", ip).Run() == nil
}
