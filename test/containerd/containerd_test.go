package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

// k8sNamespace is the containerd namespace the CRI plugin works in.
const k8sNamespace = "k8s.io"

// containerd is Debian's containerd running on temporary paths only: root,
// state, gRPC socket, runc root, CNI bin and conf dirs all live under Dir,
// so it shares nothing with a containerd the machine may run. Only the
// sandboxes' netns (/var/run/netns/cni-*, where the CRI plugin puts them)
// and the shims' sockets (/run/containerd/s/) are outside, and are removed
// with the sandboxes.
type containerd struct {
	tb      testing.TB
	Dir     string
	Socket  string
	BinDir  string // the CRI plugin's cni bin_dir
	ConfDir string // its cni conf_dir
	// Handlers are extra runtime handlers, each with its own CNI conf dir
	// (containerd 1.6's per-runtime cni_conf_dir): RunPodSandbox with that
	// RuntimeHandler uses that network.
	Handlers map[string]string

	RT  runtimeapi.RuntimeServiceClient
	Img runtimeapi.ImageServiceClient

	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	conn    *grpc.ClientConn

	mu sync.Mutex
	// seen are the sandboxes this instance ran, by ID: their netns paths,
	// removed at cleanup if anything left them behind.
	seen map[string]string
}

var configTemplate = template.Must(template.New("config.toml").Parse(`# containerd for the Membrane CRI suite: every path temporary.
version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"

[grpc]
  address = "{{.Socket}}"

[ttrpc]
  address = "{{.Socket}}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # No registry is reachable: the suite imports this image itself.
  sandbox_image = "{{.Image}}"
  # No CAP_SYS_RESOURCE on this VM: never lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.BinDir}}"
    conf_dir = "{{.ConfDir}}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{{.Dir}}/runc"
        SystemdCgroup = false
{{range $name, $dir := .Handlers}}
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{{$name}}]
      runtime_type = "io.containerd.runc.v2"
      cni_conf_dir = "{{$dir}}"
      cni_max_conf_num = 1
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{{$name}}.options]
        Root = "{{$.Dir}}/runc"
        SystemdCgroup = false
{{end}}`))

// startContainerd writes config.toml and runs containerd until it
// answers the CRI. Stop must be called (the env does, at cleanup).
func startContainerd(tb testing.TB, dir, binDir, confDir string, handlers map[string]string) (*containerd, error) {
	c := &containerd{
		tb:       tb,
		Dir:      dir,
		Socket:   filepath.Join(dir, "containerd.sock"),
		BinDir:   binDir,
		ConfDir:  confDir,
		Handlers: handlers,
		logPath:  filepath.Join(dir, "containerd.log"),
		seen:     map[string]string{},
	}
	for _, d := range append([]string{confDir}, mapValues(handlers)...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var cfg bytes.Buffer
	if err := configTemplate.Execute(&cfg, map[string]any{
		"Dir": dir, "Socket": c.Socket, "Image": SandboxImage,
		"BinDir": binDir, "ConfDir": confDir, "Handlers": handlers,
	}); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command("containerd", "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	err = c.cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("starting containerd (apt-get install containerd runc, or make deps): %w", err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()

	c.conn, err = grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return c, err
	}
	c.RT = runtimeapi.NewRuntimeServiceClient(c.conn)
	c.Img = runtimeapi.NewImageServiceClient(c.conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.RT.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			return c, fmt.Errorf("containerd exited during start (%v):\n%s", c.cmd.ProcessState, c.log(30))
		default:
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("containerd's CRI did not answer on %s within 30s: %v\n%s", c.Socket, err, c.log(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// log is the end of containerd's log.
func (c *containerd) log(lines int) string {
	raw, _ := os.ReadFile(c.logPath)
	return e2eutil.LastLines(string(raw), lines)
}

// importImage imports the OCI archive into the CRI plugin's namespace with
// ctr, offline, and waits until the CRI plugin lists the image.
func (c *containerd) importImage(archive string) error {
	out, err := exec.Command("ctr", "--address", c.Socket, "--namespace", k8sNamespace, "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", archive, err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: SandboxImage}})
		cancel()
		if err == nil && st.Image != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CRI plugin does not see the imported %s (ctr said %q): %v", SandboxImage, out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// networkReady is the CRI's NetworkReady condition: true once the CRI
// plugin has loaded a CNI configuration (what kubelet's node Ready waits for).
func (c *containerd) networkReady(ctx context.Context) (bool, string, error) {
	st, err := c.RT.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return false, "", err
	}
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.NetworkReady {
			return cond.Status, cond.Reason + ": " + cond.Message, nil
		}
	}
	return false, "", errors.New("no NetworkReady condition in the CRI status")
}

// version is the runtime's name and version, as the CRI reports them.
func (c *containerd) version() string {
	v, err := c.RT.Version(context.Background(), &runtimeapi.VersionRequest{})
	if err != nil {
		return "containerd"
	}
	return v.RuntimeName + " " + v.RuntimeVersion
}

// remember records a sandbox (and its netns) for the last-resort cleanup.
func (c *containerd) remember(id, netns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if netns != "" || c.seen[id] == "" {
		c.seen[id] = netns
	}
}

// Stop removes every sandbox through the CRI (as kubelet would, so the
// CNI DELs run while the agent is still up), stops containerd by its PID,
// and then removes whatever could be left: runc containers, shims, mounts
// under Dir, the sandboxes' netns, host veths and cached CNI results. It
// returns what it had to clean up by force, for the test to report.
func (c *containerd) Stop() []string {
	var forced []string
	if c.RT != nil && c.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if list, err := c.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, s := range list.Items {
				c.remember(s.Id, "")
				if _, err := c.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
					forced = append(forced, fmt.Sprintf("StopPodSandbox %s: %v", s.Id, err))
				}
				if _, err := c.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
					forced = append(forced, fmt.Sprintf("RemovePodSandbox %s: %v", s.Id, err))
				}
			}
		}
		cancel()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.cmd != nil && c.cmd.Process != nil && c.running() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			forced = append(forced, fmt.Sprintf("containerd (pid %d) ignored SIGTERM for 15s: killed", c.cmd.Process.Pid))
			c.cmd.Process.Kill()
			<-c.exited
		}
	}

	// runc containers the CRI did not remove (their processes die with them).
	runcRoot := filepath.Join(c.Dir, "runc", k8sNamespace)
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			forced = append(forced, "runc container "+id)
			exec.Command("runc", "--root", runcRoot, "delete", "--force", id).Run()
		}
	}
	for _, pid := range c.shims() {
		forced = append(forced, fmt.Sprintf("shim pid %d", pid))
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(c.Dir) {
		forced = append(forced, "mount "+m)
		unix.Unmount(m, unix.MNT_DETACH)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, netns := range c.seen {
		if netns != "" {
			if _, err := os.Stat(netns); err == nil {
				forced = append(forced, "netns "+netns)
				unix.Unmount(netns, unix.MNT_DETACH)
				os.Remove(netns)
			}
		}
		if l, err := netlink.LinkByName(plugin.HostVethName(id, "eth0")); err == nil {
			forced = append(forced, "host veth "+l.Attrs().Name)
			netlink.LinkDel(l)
		}
		cached, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", "*-"+id+"-*"))
		for _, f := range cached {
			forced = append(forced, "cached CNI result "+f)
			os.Remove(f)
		}
	}
	return forced
}

func (c *containerd) running() bool {
	if c.exited == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// shims are the PIDs of containerd-shim-runc-v2 processes serving this
// instance (their command line names its socket).
func (c *containerd) shims() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == c.Socket {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// mountsUnder lists the mount points below dir, deepest (latest) first.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(raw)) {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.Reverse(out)
	return out
}

func unescapeMountinfo(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// sandboxInfo is what containerd's verbose PodSandboxStatus says beyond
// the CRI fields: the OCI spec (the netns path is in it) and the CNI result.
type sandboxInfo struct {
	RuntimeSpec struct {
		Linux struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
}

// netnsOf is the sandbox's network namespace path, from the verbose status.
func netnsOf(st *runtimeapi.PodSandboxStatusResponse) (string, error) {
	raw, ok := st.GetInfo()["info"]
	if !ok {
		return "", errors.New("verbose PodSandboxStatus has no \"info\"")
	}
	var info sandboxInfo
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		return "", fmt.Errorf("PodSandboxStatus info: %w", err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			return ns.Path, nil
		}
	}
	return "", errors.New("the sandbox's OCI spec has no network namespace")
}
