package containerd

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// The test binary doubles as the tools the suite runs elsewhere, chosen
// by e2eutil.ToolEnv: the traffic tools of e2eutil (a TCP and UDP server,
// clients) re-executed inside a sandbox's netns (`nsenter --net=NETNS`),
// and a CNI plugin wrapper that records what containerd passes before
// handing over to membrane-cni.

// netns is where the traffic tools run for p.
func (p *pod) netns() e2eutil.Netns { return e2eutil.NsenterNetns(p.Name, p.Netns) }

// startServer runs the server tool in p's netns until the test ends
// (killed by PID at cleanup).
func startServer(t *testing.T, p *pod, ports ...string) {
	t.Helper()
	p.netns().StartServer(t, ports...)
}

// canTCP reports whether from can open a TCP connection to ip:port.
func canTCP(from *pod, ip, port string) bool {
	return from.netns().CanTCP(net.JoinHostPort(ip, port))
}

// canPing reports whether from gets an ICMP echo reply from ip (one try).
func canPing(from *pod, ip string) bool {
	return from.netns().CanPing(ip)
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
