package containerd

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/membrane-net/membrane/internal/e2eutil"
	"github.com/membrane-net/membrane/internal/testutil"
)

// setup gates a test that runs containerd: root (or a failure under CI),
// not -short, binaries built, containerd/ctr/runc and the reference
// plugins installed.
func setup(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("containerd CRI suite: skipped with -short")
	}
	testutil.RequirePrivileged(tb)
	bins.Need(tb, e2eutil.AgentBin, e2eutil.PluginBin)
	if bins.pauseErr != nil {
		tb.Fatal(bins.pauseErr)
	}
	for _, b := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			tb.Fatalf("%s is missing: apt-get install containerd runc (make deps installs them)", b)
		}
	}
	for _, p := range []string{"loopback", "ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(e2eutil.RefPluginDir, p)); err != nil {
			tb.Fatalf("reference plugin %s missing (%v): apt-get install containernetworking-plugins (make deps)", p, err)
		}
	}
}

type envOpts struct {
	// Handlers are extra runtime handlers: name -> the conflist (JSON)
	// written into that handler's own CNI conf dir before containerd
	// starts. The env's paths (BinDir, AgentSocket) are set when it is called.
	Handlers func(e *env) map[string][]byte
	// AgentArgs are extra membrane-agent flags.
	AgentArgs []string
}

// env is one node: containerd (CRI) and membrane-agent, installed the way
// docs/install.md says: `membrane-agent install-cni` fills the CNI bin
// dir, and the agent writes the conflist into the CRI plugin's conf dir
// once it serves.
type env struct {
	tb      testing.TB
	Dir     string
	BinDir  string
	BPFRoot string
	// AgentSocket is where the agent will listen (known before it runs).
	AgentSocket string
	Agent       *agent
	Ctrd        *containerd
	// HandlerConfDirs are the extra handlers' CNI conf dirs.
	HandlerConfDirs map[string]string

	podSeq atomic.Int64
}

func newEnv(tb testing.TB, o envOpts) *env {
	tb.Helper()
	setup(tb)
	// Short: unix socket paths under it must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "mbctrd")
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{
		tb:              tb,
		Dir:             dir,
		BinDir:          filepath.Join(dir, "cni-bin"),
		BPFRoot:         testutil.BPFDir(tb),
		AgentSocket:     filepath.Join(dir, "agent.sock"),
		HandlerConfDirs: map[string]string{},
	}
	// One cleanup, registered before anything runs, so the order is right
	// whatever fails: sandboxes (their CNI DELs need the agent), then
	// containerd, then the agent, then the files.
	tb.Cleanup(e.cleanup)

	// The CNI bin dir, as an operator fills it: membrane-cni by the
	// agent's install-cni (found next to the agent binary), plus the
	// reference loopback that containerd runs itself for every
	// sandbox's lo, and ptp/host-local for baselines.
	out, err := exec.Command(bins.Agent, "install-cni", "--cni-bin-dir", e.BinDir).CombinedOutput()
	if err != nil {
		tb.Fatalf("membrane-agent install-cni: %v: %s", err, out)
	}
	for _, p := range []string{"loopback", "ptp", "host-local"} {
		if err := os.Symlink(filepath.Join(e2eutil.RefPluginDir, p), filepath.Join(e.BinDir, p)); err != nil {
			tb.Fatal(err)
		}
	}
	var handlers map[string][]byte
	if o.Handlers != nil {
		handlers = o.Handlers(e)
	}
	for name, conf := range handlers {
		d := filepath.Join(dir, "net.d-"+name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "10-"+name+".conflist"), conf, 0o644); err != nil {
			tb.Fatal(err)
		}
		e.HandlerConfDirs[name] = d
	}

	// containerd first, with an empty conf dir: no network yet.
	confDir := filepath.Join(dir, "net.d")
	e.Ctrd, err = startContainerd(tb, dir, e.BinDir, confDir, e.HandlerConfDirs)
	if err != nil {
		tb.Fatal(err)
	}
	if ready, why, err := e.Ctrd.networkReady(ctxT(tb)); err != nil || ready {
		tb.Fatalf("CRI NetworkReady before any conflist exists: %v, %v (%s)", ready, err, why)
	}
	image := filepath.Join(dir, "pause-image.tar")
	if err := writeSandboxImage(bins.pause, image); err != nil {
		tb.Fatalf("building the sandbox image: %v", err)
	}
	if err := e.Ctrd.importImage(image); err != nil {
		tb.Fatal(err)
	}

	// The agent writes the conflist once it serves; containerd notices.
	e.Agent, err = startAgent(tb, dir, e.AgentSocket, e.BPFRoot, filepath.Join(confDir, "05-membrane.conflist"), o.AgentArgs...)
	if err != nil {
		tb.Fatal(err)
	}
	// The conflist's start hook runs right after the API server's: the
	// socket may answer a moment before the file is there.
	e2eutil.Eventually(tb, 10*time.Second, "the agent to write its conflist once it serves", func() error {
		_, err := os.Stat(e.Agent.Conflist)
		return err
	})
	e.waitNetworkReady()
	return e
}

// waitNetworkReady waits until containerd's CRI reports NetworkReady.
func (e *env) waitNetworkReady() {
	e.tb.Helper()
	e2eutil.Eventually(e.tb, 20*time.Second, "containerd's CRI to report NetworkReady once the agent wrote its conflist", func() error {
		ready, why, err := e.Ctrd.networkReady(ctxT(e.tb))
		if err != nil {
			return err
		}
		if !ready {
			return fmt.Errorf("NetworkReady=false: %s", why)
		}
		return nil
	})
}

func (e *env) cleanup() {
	var forced []string
	if e.Ctrd != nil {
		forced = e.Ctrd.Stop()
	}
	if e.Agent != nil {
		e.Agent.Stop()
	}
	if len(forced) > 0 {
		e.tb.Errorf("cleanup had to remove what the CRI should have: %s", strings.Join(forced, "; "))
	}
	if e.tb.Failed() || os.Getenv("MEMBRANE_CTRD_KEEP_LOGS") == "1" {
		if e.Ctrd != nil {
			e.tb.Logf("containerd log (end):\n%s", e.Ctrd.log(40))
		}
		if e.Agent != nil {
			e.tb.Logf("membrane-agent log (end):\n%s", e.Agent.Log(60))
		}
	}
	os.RemoveAll(e.Dir)
}

// ---- pods through the CRI --------------------------------------------

// pod is a pod as kubelet knows it, and its sandbox once running.
type pod struct {
	Namespace, Name, UID string
	Labels               map[string]string
	// Handler is the runtime handler (RuntimeClass); "" is runc with the
	// default CNI conf dir.
	Handler string
	// Extra fills the sandbox config further (port mappings, ...).
	Extra func(*runtimeapi.PodSandboxConfig)

	ID    string     // the sandbox ID: CNI_CONTAINERID
	IP    netip.Addr // from the sandbox status
	Netns string     // from the sandbox's OCI spec
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// newPod names a pod and, if it has labels, registers them with the agent.
func (e *env) newPod(namespace, name string, labels map[string]string) *pod {
	p := &pod{Namespace: namespace, Name: name, UID: uuid(), Labels: labels}
	if labels != nil {
		e.Agent.putPod(namespace, name, p.UID, labels)
	}
	return p
}

// newPodUnregistered names a pod the agent has no metadata for.
func (e *env) newPodUnregistered(namespace, name string) *pod {
	return &pod{Namespace: namespace, Name: name, UID: uuid()}
}

// sandboxConfig is what kubelet sends for a pod: metadata, the
// io.kubernetes.pod.* labels, DNS, log dir, the pod-level namespaces.
func (e *env) sandboxConfig(p *pod) *runtimeapi.PodSandboxConfig {
	labels := map[string]string{
		"io.kubernetes.pod.name":      p.Name,
		"io.kubernetes.pod.namespace": p.Namespace,
		"io.kubernetes.pod.uid":       p.UID,
	}
	for k, v := range p.Labels {
		labels[k] = v
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.Name, Uid: p.UID, Namespace: p.Namespace, Attempt: 0},
		Hostname:     p.Name,
		LogDirectory: filepath.Join(e.Dir, "pods", p.Namespace+"_"+p.Name+"_"+p.UID),
		DnsConfig: &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{p.Namespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Options:  []string{"ndots:5"},
		},
		Labels: labels,
		Annotations: map[string]string{
			"kubernetes.io/config.source": "api",
			"kubernetes.io/config.seen":   time.Now().Format(time.RFC3339Nano),
		},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	if p.Extra != nil {
		p.Extra(cfg)
	}
	return cfg
}

// run is RunPodSandbox, then the sandbox's status: its IP and netns. It
// returns the RunPodSandbox call's wall time.
func (e *env) run(ctx context.Context, p *pod) (time.Duration, error) {
	cfg := e.sandboxConfig(p)
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := e.Ctrd.RT.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: p.Handler})
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("RunPodSandbox %s/%s: %w", p.Namespace, p.Name, err)
	}
	p.ID = resp.PodSandboxId
	e.Ctrd.remember(p.ID, "")
	st, err := e.Ctrd.RT.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.ID, Verbose: true})
	if err != nil {
		return d, fmt.Errorf("PodSandboxStatus %s/%s: %w", p.Namespace, p.Name, err)
	}
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return d, fmt.Errorf("sandbox of %s/%s is %s", p.Namespace, p.Name, st.Status.State)
	}
	if p.IP, err = netip.ParseAddr(st.GetStatus().GetNetwork().GetIp()); err != nil {
		return d, fmt.Errorf("sandbox of %s/%s has no IP in its status (%q): %w", p.Namespace, p.Name, st.GetStatus().GetNetwork().GetIp(), err)
	}
	if p.Netns, err = netnsOf(st); err != nil {
		return d, fmt.Errorf("sandbox of %s/%s: %w", p.Namespace, p.Name, err)
	}
	e.Ctrd.remember(p.ID, p.Netns)
	return d, nil
}

func (e *env) mustRun(p *pod) {
	e.tb.Helper()
	if _, err := e.run(ctxT(e.tb), p); err != nil {
		e.tb.Fatal(err)
	}
}

// stop is StopPodSandbox: the CNI DEL with the sandbox's netns.
func (e *env) stop(ctx context.Context, p *pod) error {
	if _, err := e.Ctrd.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.ID}); err != nil {
		return fmt.Errorf("StopPodSandbox %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// remove is RemovePodSandbox: a second CNI DEL, with an empty netns.
func (e *env) remove(ctx context.Context, p *pod) error {
	if _, err := e.Ctrd.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.ID}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
