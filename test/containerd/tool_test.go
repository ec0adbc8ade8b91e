package containerd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// The test binary doubles as the tools the suite runs elsewhere, chosen
// by MEMBRANE_CTRD_TOOL: a TCP server and client re-executed inside a
// sandbox's netns (`nsenter --net=NETNS`), and a CNI plugin wrapper that
// records what containerd passes before handing over to membrane-cni.
const toolEnv = "MEMBRANE_CTRD_TOOL"

func runTool(tool string, args []string) int {
	var err error
	switch tool {
	case "serve":
		err = serve(args)
	case "tcp":
		err = tcpClient(args)
	case "cni-record":
		return recordAndExec()
	default:
		err = fmt.Errorf("unknown tool %q", tool)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// serve answers "ok" to every TCP connection on each port given.
func serve(ports []string) error {
	errc := make(chan error, len(ports))
	for _, p := range ports {
		ln, err := net.Listen("tcp4", "0.0.0.0:"+p)
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
	}
	fmt.Println("ready")
	return <-errc
}

// tcpClient connects to args[0] and expects "ok" within a second.
func tcpClient(args []string) error {
	c, err := net.DialTimeout("tcp", args[0], time.Second)
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

// inPod runs this binary as tool in p's netns.
func inPod(ctx context.Context, p *pod, tool string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.Netns, self}, args...)...)
	cmd.Env = append(os.Environ(), toolEnv+"="+tool)
	return cmd
}

var serverMu sync.Mutex

// startServer runs the server tool in p's netns until the test ends
// (killed by PID at cleanup).
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

// canTCP reports whether from can open a TCP connection to ip:port.
func canTCP(from *pod, ip, port string) bool {
	return inPod(context.Background(), from, "tcp", net.JoinHostPort(ip, port)).Run() == nil
}

// canPing reports whether from gets an ICMP echo reply from ip (one try).
func canPing(from *pod, ip string) bool {
	return exec.Command("nsenter", "--net="+from.Netns, "ping", "-c", "1", "-W", "1", ip).Run() == nil
}

// ---- recording what containerd passes to CNI ---------------------------

// cniCall is one plugin invocation as containerd made it.
type cniCall struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID"`
	Netns       string          `json:"netns"`
	IfName      string          `json:"ifName"`
	Args        string          `json:"args"`
	Path        string          `json:"path"`
	Stdin       json.RawMessage `json:"stdin"`
	ExitCode    int             `json:"exitCode"`
}

// recordAndExec is the cni-record tool: it runs the real plugin
// (MEMBRANE_CTRD_PLUGIN) with the same environment and stdin, appends the
// call and the plugin's exit code to MEMBRANE_CTRD_RECORD as a JSON line,
// and answers what the plugin answered.
func recordAndExec() int {
	stdin, _ := readAll(os.Stdin)
	call := cniCall{
		Command:     os.Getenv("CNI_COMMAND"),
		ContainerID: os.Getenv("CNI_CONTAINERID"),
		Netns:       os.Getenv("CNI_NETNS"),
		IfName:      os.Getenv("CNI_IFNAME"),
		Args:        os.Getenv("CNI_ARGS"),
		Path:        os.Getenv("CNI_PATH"),
		Stdin:       json.RawMessage(stdin),
	}
	if !json.Valid(stdin) {
		call.Stdin, _ = json.Marshal(string(stdin))
	}
	cmd := exec.Command(os.Getenv("MEMBRANE_CTRD_PLUGIN"))
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		call.ExitCode = 1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			call.ExitCode = ee.ExitCode()
		}
	}
	line, _ := json.Marshal(call)
	if f, err := os.OpenFile(os.Getenv("MEMBRANE_CTRD_RECORD"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.Write(append(line, '\n'))
		f.Close()
	}
	return call.ExitCode
}

func readAll(f *os.File) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.Bytes(), err
}
