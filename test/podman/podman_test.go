package podman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/plugins/membrane-cni/plugin"
)

const (
	// imageName is what the rootfs tarball is imported as.
	imageName = "localhost/membrane-test/busybox:latest"
	// networkName is the conflist's network, as users type it.
	networkName = "membrane"
	// cniCacheDir is where podman's libcni caches ADD results (the
	// prevResult of its DEL); not configurable in podman 4.3.
	cniCacheDir = "/var/lib/cni/results"
)

// podmanEnv is a podman of the test's own: its containers.conf, storage,
// run and tmp directories and network configuration directory are all
// under dir, so neither the machine's podman nor another test sees it.
type podmanEnv struct {
	t       *testing.T
	a       *agent
	dir     string
	conf    string
	root    string
	runroot string
	// ids are the containers this podman ran, for the CNI cache cleanup.
	ids []string
	// pods are the podman pods it made, whose cgroups podman 4.3 leaves
	// behind in the unified and systemd hierarchies.
	pods []string
}

// containersConf is the whole podman configuration: the settings this
// machine kind needs (cgroupfs, runc, file events, ulimits podman can
// set without CAP_SYS_RESOURCE), the CNI backend with membrane-cni, and
// every runtime path under the test's directory.
const containersConf = `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=8192:8192"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
lock_type = "file"
tmp_dir = %q

[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q
`

// storageConf keeps podman off the machine's storage.conf, if any.
const storageConf = `[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`

// newPodman sets up a podman for the test whose "membrane" network is
// agent a, and imports the test image into it.
func newPodman(t *testing.T, a *agent) *podmanEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbpodman-rt")
	if err != nil {
		t.Fatal(err)
	}
	p := &podmanEnv{
		t:       t,
		a:       a,
		dir:     dir,
		conf:    filepath.Join(dir, "containers.conf"),
		root:    filepath.Join(dir, "root"),
		runroot: filepath.Join(dir, "runroot"),
	}
	t.Cleanup(p.cleanup)
	netDir := filepath.Join(dir, "net.d")
	// cniVersion 1.0.0: podman 4.3's libcni cannot read a 1.1.0 result;
	// cniVersions lets a newer runtime pick 1.1.0.
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": %q,
  "plugins": [{"type": "membrane-cni", "socket": %q, "stateDir": %q, "mtu": 1500}]}
`, networkName, a.Socket, a.StateDir)
	for path, data := range map[string]string{
		p.conf:                             fmt.Sprintf(containersConf, filepath.Join(dir, "tmp"), bins.PluginDir, netDir),
		filepath.Join(dir, "storage.conf"): fmt.Sprintf(storageConf, p.root, p.runroot),
		filepath.Join(netDir, "05-membrane.conflist"): conflist,
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.must("import", image.path, imageName)
	return p
}

// podman runs podman with the test's configuration; the error carries
// podman's stderr, which is what a user would read.
func (p *podmanEnv) podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"--root", p.root, "--runroot", p.runroot, "--storage-driver", "vfs"}, args...)
	cmd := exec.CommandContext(ctx, "podman", full...)
	cmd.Env = append(os.Environ(),
		"CONTAINERS_CONF="+p.conf,
		"CONTAINERS_STORAGE_CONF="+filepath.Join(p.dir, "storage.conf"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (p *podmanEnv) must(args ...string) string {
	p.t.Helper()
	out, err := p.podman(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// cleanup removes whatever the test left: pods, containers (their DEL
// runs), CNI cache entries, anything mounted under dir, dir itself.
func (p *podmanEnv) cleanup() {
	p.podman("pod", "rm", "-f", "-t", "0", "--all")
	p.podman("rm", "-f", "-t", "0", "--all")
	for _, id := range p.ids {
		os.Remove(filepath.Join(cniCacheDir, networkName+"-"+id+"-eth0"))
	}
	for _, id := range p.pods {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/libpod_parent/" + id)
		for _, d := range dirs {
			os.Remove(d) // rmdir: only an empty cgroup goes
		}
	}
	if raw, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var mounts []string
		for line := range strings.Lines(string(raw)) {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], p.dir+"/") {
				mounts = append(mounts, f[4])
			}
		}
		// Deepest first.
		slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
		for _, m := range mounts {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	os.RemoveAll(p.dir)
}

// createPod makes a podman pod on the membrane network.
func (p *podmanEnv) createPod(name string) {
	p.t.Helper()
	id := strings.TrimSpace(p.must("pod", "create", "--name", name, "--network", networkName))
	p.pods = append(p.pods, id)
}

// container is what podman reports of a running container.
type container struct {
	Name   string
	ID     string
	Status string
	IP     netip.Addr // on the membrane network
	Netns  string     // podman's netns path (SandboxKey)
}

// run starts a container on the membrane network: `podman run -d
// --network membrane --name NAME IMAGE COMMAND`, COMMAND `sleep 3600` if
// none is given.
func (p *podmanEnv) run(name string, command ...string) (*container, error) {
	if len(command) == 0 {
		command = []string{"sleep", "3600"}
	}
	args := append([]string{"run", "-d", "--pull=never", "--network", networkName, "--name", name, imageName}, command...)
	out, err := p.podman(args...)
	if id := strings.TrimSpace(out); id != "" {
		p.ids = append(p.ids, id)
	}
	if err != nil {
		return nil, err
	}
	return p.inspect(name), nil
}

func (p *podmanEnv) mustRun(name string, command ...string) *container {
	p.t.Helper()
	c, err := p.run(name, command...)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// inspect reads a container's ID, state, netns and address.
func (p *podmanEnv) inspect(name string) *container {
	p.t.Helper()
	var got []struct {
		ID    string `json:"Id"`
		State struct {
			Status string
		}
		NetworkSettings struct {
			SandboxKey string
			Networks   map[string]struct{ IPAddress string }
		}
	}
	if err := json.Unmarshal([]byte(p.must("container", "inspect", name)), &got); err != nil || len(got) != 1 {
		p.t.Fatalf("podman container inspect %s: %v (%d containers)", name, err, len(got))
	}
	c := &container{Name: name, ID: got[0].ID, Status: got[0].State.Status, Netns: got[0].NetworkSettings.SandboxKey}
	if !slices.Contains(p.ids, c.ID) {
		p.ids = append(p.ids, c.ID)
	}
	if n, ok := got[0].NetworkSettings.Networks[networkName]; ok && n.IPAddress != "" {
		ip, err := netip.ParseAddr(n.IPAddress)
		if err != nil {
			p.t.Fatalf("container %s: address %q: %v", name, n.IPAddress, err)
		}
		c.IP = ip
	}
	return c
}

// exec runs a command in a container (podman exec).
func (p *podmanEnv) exec(c *container, command ...string) (string, error) {
	return p.podman(append([]string{"exec", c.Name}, command...)...)
}

// ---- what a user can observe -----------------------------------------

// assertReady checks the endpoint of a running container's attachment
// (c.ID; c.Name is where the check runs `ip addr`): ready, named after
// pod default/podName, the container's address (as podman reports it and
// as it is on eth0 inside), an identity with the labels given plus the
// namespace's, and that identity in the datapath's ipcache.
func assertReady(t *testing.T, a *agent, p *podmanEnv, c *container, podName string, labels ...string) *models.Endpoint {
	t.Helper()
	ep := a.endpoint(c.ID)
	if ep == nil {
		t.Fatalf("container %s (%s): the agent has no endpoint for it", c.Name, c.ID)
	}
	if ep.State != models.StateReady {
		t.Errorf("container %s: endpoint %d is %s, want ready", c.Name, ep.ID, ep.State)
	}
	if ep.K8sNamespace != "default" || ep.K8sPodName != podName {
		t.Errorf("container %s: endpoint %d is of pod %s/%s, want default/%s", c.Name, ep.ID, ep.K8sNamespace, ep.K8sPodName, podName)
	}
	if !c.IP.IsValid() || !a.PodCIDR.Contains(c.IP) {
		t.Errorf("container %s: podman reports address %v, want one from the agent's pod CIDR %s", c.Name, c.IP, a.PodCIDR)
	}
	if ep.Addressing.IPv4 != c.IP.String() {
		t.Errorf("container %s: endpoint addressing %+v, podman reports %s", c.Name, ep.Addressing, c.IP)
	}
	if got := a.ownedIPs(c.ID); !slices.Equal(got, []string{c.IP.String()}) {
		t.Errorf("container %s: IPAM holds %v for it, want [%s]", c.Name, got, c.IP)
	}
	if out, err := p.exec(c, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); err != nil {
		t.Error(err)
	} else if !strings.Contains(out, " "+c.IP.String()+"/") {
		t.Errorf("container %s: eth0 inside does not have %s: %s", c.Name, c.IP, out)
	}
	if ep.Identity == nil || ep.Identity.ID < 256 {
		t.Fatalf("container %s: endpoint %d has identity %+v, want a cluster identity", c.Name, ep.ID, ep.Identity)
	}
	for _, l := range append(labels, "k8s:io.kubernetes.pod.namespace=default") {
		if !slices.Contains(ep.Identity.Labels, l) {
			t.Errorf("container %s: identity %d has labels %v, want %s among them", c.Name, ep.Identity.ID, ep.Identity.Labels, l)
		}
	}
	if id, ok := a.IPCache()[netip.PrefixFrom(c.IP, 32)]; !ok || id != ep.Identity.ID {
		t.Errorf("container %s: ipcache maps %s to identity %d (present: %v), want %d", c.Name, c.IP, id, ok, ep.Identity.ID)
	}
	return ep
}

// assertGone checks that nothing of a container's attachment is left: host
// veth, netns, addresses, endpoint, ipcache entry, podman's cached result.
// DEL may come from podman's cleanup process, after the command that
// stopped the container returned, so this is polled.
func assertGone(t *testing.T, a *agent, c *container) {
	t.Helper()
	veth := plugin.HostVethName(c.ID, "eth0")
	e2eutil.Eventually(t, 15*time.Second, "container "+c.Name+"'s network to be torn down", func() error {
		var left []string
		if _, err := netlink.LinkByName(veth); err == nil {
			left = append(left, "host veth "+veth)
		}
		if c.Netns != "" {
			if _, err := os.Stat(c.Netns); !errors.Is(err, os.ErrNotExist) {
				left = append(left, "netns "+c.Netns)
			}
		}
		if ips := a.ownedIPs(c.ID); len(ips) > 0 {
			left = append(left, fmt.Sprintf("addresses %v", ips))
		}
		if ep := a.endpoint(c.ID); ep != nil {
			left = append(left, fmt.Sprintf("endpoint %d (%s)", ep.ID, ep.State))
		}
		if c.IP.IsValid() {
			if id, ok := a.IPCache()[netip.PrefixFrom(c.IP, 32)]; ok {
				left = append(left, fmt.Sprintf("ipcache %s -> %d", c.IP, id))
			}
		}
		if _, err := os.Stat(filepath.Join(cniCacheDir, networkName+"-"+c.ID+"-eth0")); err == nil {
			left = append(left, "podman's cached CNI result")
		}
		if len(left) > 0 {
			return errors.New(strings.Join(left, ", ") + " left")
		}
		return nil
	})
}

// assertNoIdentities: once every container is gone, the agent holds no
// cluster identity (no reference leaked by an ADD, a failed ADD or a DEL).
func assertNoIdentities(t *testing.T, a *agent) {
	t.Helper()
	e2eutil.Eventually(t, 10*time.Second, "every container identity released", func() error {
		if ids := a.Identities(); len(ids) != 0 {
			return fmt.Errorf("identities still held (id: endpoints): %v", ids)
		}
		return nil
	})
}

// canPing: one ICMP echo from a container, waiting at most a second.
func canPing(p *podmanEnv, from *container, to netip.Addr) bool {
	_, err := p.exec(from, "ping", "-c1", "-W1", to.String())
	return err == nil
}

// startServer runs busybox nc as a TCP server on each port in c (podman
// exec -d), answering "ok" to every connection, and waits until it
// answers on the container's loopback.
func startServer(t *testing.T, p *podmanEnv, c *container, ports ...string) {
	t.Helper()
	for _, port := range ports {
		p.must("exec", "-d", c.Name, "nc", "-ll", "-p", port, "-e", "echo", "ok")
		e2eutil.Eventually(t, 10*time.Second, "nc to listen on "+c.Name+":"+port, func() error {
			_, err := p.exec(c, "nc", "-w1", "127.0.0.1", port)
			return err
		})
	}
}

// canTCP reports whether from completes a TCP handshake with to:port
// within a second (busybox nc -w1: the connect timeout).
func canTCP(p *podmanEnv, from *container, to netip.Addr, port string) bool {
	_, err := p.exec(from, "nc", "-w1", to.String(), port)
	return err == nil
}
