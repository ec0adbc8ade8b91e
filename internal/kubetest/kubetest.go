// Package kubetest runs a real Kubernetes API server for tests: Debian's
// etcd and kube-apiserver v1.31.4 (built by scripts/kube-apiserver.sh into
// a cache outside the repository) on loopback ports of their own, with
// RBAC, CRDs and ServiceAccount tokens. There is no controller-manager,
// scheduler or kubelet: a test sets a Pod's spec.nodeName and writes its
// status itself, and creates the ServiceAccounts it uses.
//
//	c := kubetest.Start(t)
//	c.Kubectl(t, "create", "namespace", "demo")
//	// client-go: clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/testutil"
)

// Version is the kube-apiserver release the tests run.
const Version = "v1.31.4"

// BinDirEnv names the environment variable that overrides DefaultBinDir,
// for the build script and for Start alike.
const BinDirEnv = "MEMBRANE_KUBE_BIN_DIR"

// DefaultBinDir is where scripts/kube-apiserver.sh (run by make deps)
// puts kube-apiserver, and kubectl when the machine has none.
const DefaultBinDir = "/var/cache/membrane-test/k8s-" + Version

const (
	etcdTimeout      = 30 * time.Second
	apiserverTimeout = 90 * time.Second // generous: CI runs test packages in parallel on 2 cores
	stopGrace        = 10 * time.Second
	kubectlTimeout   = 2 * time.Minute
)

// Cluster is a running etcd and kube-apiserver, stopped and removed when
// the test that started it ends.
type Cluster struct {
	dir                               string
	etcdBin, apiserverBin, kubectlBin string
	pki                               *pki
	token                             string // the admin's (group system:masters)
	port                              int    // kube-apiserver's secure port, kept across restarts
	apiserverArgs                     []string
	kubeconfig                        string
	etcdReady                         time.Duration // how long etcd took to start
	http                              *http.Client

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc // the last one started
}

// Start starts etcd and kube-apiserver and waits until the API server is
// ready. Without the binaries the test is skipped (failed under
// MEMBRANE_REQUIRE_PRIVILEGED=1), as it is with -short.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver: skipped with -short")
	}
	c := &Cluster{dir: t.TempDir()}
	c.findBinaries(t)
	began := time.Now()

	var err error
	if c.pki, err = newPKI(c.dir); err != nil {
		t.Fatal(err)
	}
	c.token = randomHex(16)
	tokens := filepath.Join(c.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.token+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.caPEM)
	c.http = &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}

	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.Failed() {
			for _, p := range []*proc{c.apiserver, c.etcd} {
				if p != nil {
					t.Logf("%s log ends:\n%s", p.name, p.tail(20))
				}
			}
		}
		c.killLocked()
		c.http.CloseIdleConnections()
	})

	// Free ports are picked, then closed and given to etcd and
	// kube-apiserver: another process may take one in between, so a
	// start that failed on a taken port is tried again on others.
	for attempt := 1; ; attempt++ {
		err = c.start(tokens)
		if err == nil {
			break
		}
		c.mu.Lock()
		c.killLocked()
		c.mu.Unlock()
		if attempt == 3 || !errors.Is(err, errPortTaken) {
			t.Fatal(err)
		}
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.kubeconfig, c.token); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s ready at %s in %v (etcd in %v)", Version, c.Server(),
		time.Since(began).Round(time.Millisecond), c.etcdReady.Round(time.Millisecond))
	return c
}

// findBinaries finds etcd and kubectl on PATH (kubectl in the cache if the
// machine has none) and kube-apiserver in the cache.
func (c *Cluster) findBinaries(t testing.TB) {
	t.Helper()
	binDir := os.Getenv(BinDirEnv)
	if binDir == "" {
		binDir = DefaultBinDir
	}
	build := fmt.Sprintf("build it with `make deps` or scripts/kube-apiserver.sh (cache: %s, set by %s)", binDir, BinDirEnv)
	c.apiserverBin = filepath.Join(binDir, "kube-apiserver")
	if _, err := os.Stat(c.apiserverBin); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("kube-apiserver %s not found: %s", Version, build))
	}
	var err error
	if c.etcdBin, err = exec.LookPath("etcd"); err != nil {
		testutil.SkipOrFail(t, "etcd not found on PATH: install Debian's etcd-server (make deps does)")
	}
	if c.kubectlBin, err = exec.LookPath("kubectl"); err != nil {
		c.kubectlBin = filepath.Join(binDir, "kubectl")
		if _, err := os.Stat(c.kubectlBin); err != nil {
			testutil.SkipOrFail(t, "kubectl not found on PATH or in the cache: "+build)
		}
	}
}

var errPortTaken = errors.New("a port was taken")

// start starts etcd and kube-apiserver on new free ports.
func (c *Cluster) start(tokens string) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	data := filepath.Join(c.dir, "etcd")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	etcd, err := startProc("etcd", c.etcdBin, []string{
		"--name=kubetest",
		"--data-dir=" + data,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=kubetest=" + peer,
		"--initial-cluster-state=new",
		// A single member elects itself: with short raft timeouts it
		// serves in ~0.1 s rather than up to 1 s.
		"--heartbeat-interval=10", "--election-timeout=100",
		"--logger=zap", "--log-outputs=stderr", "--log-level=warn",
	}, etcdEnv(), filepath.Join(c.dir, "etcd.log"))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.etcd = etcd
	c.mu.Unlock()
	if err := etcd.waitReady(etcdTimeout, func() error { return etcdHealthy(c.http, client) }); err != nil {
		if etcd.portInUse() {
			return fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return err
	}
	c.etcdReady = time.Since(etcd.started)

	c.port = ports[2]
	c.apiserverArgs = []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.port),
		"--etcd-servers=" + client,
		"--cert-dir=" + filepath.Join(c.dir, "certs"),
		"--tls-cert-file=" + c.pki.certFile,
		"--tls-private-key-file=" + c.pki.keyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.pki.saPubFile,
		"--service-account-signing-key-file=" + c.pki.saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		// No controller-manager makes default ServiceAccounts, so the
		// admission plugin that requires them would refuse every Pod.
		"--disable-admission-plugins=ServiceAccount",
		// Nothing maintains the kubernetes Service's endpoints.
		"--endpoint-reconciler-type=none",
	}
	err = c.StartAPIServer()
	c.mu.Lock()
	taken := c.apiserver != nil && c.apiserver.portInUse()
	c.mu.Unlock()
	if err != nil && taken {
		return fmt.Errorf("%w: %v", errPortTaken, err)
	}
	return err
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same port and etcd (so with the same data), and waits until it is ready.
func (c *Cluster) StartAPIServer() error {
	c.mu.Lock()
	if c.apiserver != nil && !c.apiserver.exited() {
		c.mu.Unlock()
		return errors.New("kube-apiserver is running")
	}
	p, err := startProc("kube-apiserver", c.apiserverBin, c.apiserverArgs, os.Environ(), filepath.Join(c.dir, "kube-apiserver.log"))
	if err == nil {
		c.apiserver = p
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return p.waitReady(apiserverTimeout, c.readyz)
}

// StopAPIServer stops kube-apiserver (SIGTERM, by PID) and waits until it
// has exited; etcd keeps running. Clients then find nothing listening on
// the API server's port until StartAPIServer.
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil {
		c.apiserver.stop(stopGrace)
	}
}

// killLocked kills kube-apiserver and etcd and waits until they have
// exited. Nothing of theirs is kept, so SIGKILL: a graceful stop of
// kube-apiserver takes a second.
func (c *Cluster) killLocked() {
	for _, p := range []*proc{c.apiserver, c.etcd} {
		if p != nil {
			p.kill()
		}
	}
}

// Kubeconfig returns the path of a kubeconfig file for the admin (group
// system:masters: RBAC allows everything).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Server returns the API server's URL (https://127.0.0.1:PORT).
func (c *Cluster) Server() string { return "https://127.0.0.1:" + strconv.Itoa(c.port) }

// Kubectl runs kubectl as the admin and returns its standard output; it
// fails the test if kubectl fails.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, err := c.KubectlErr(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	return stdout
}

// KubectlErr runs kubectl as the admin.
func (c *Cluster) KubectlErr(args ...string) (stdout, stderr string, err error) {
	return c.KubectlAs(c.kubeconfig, "", args...)
}

// Apply runs kubectl apply -f - as the admin with the manifest on its
// standard input; it fails the test if kubectl fails.
func (c *Cluster) Apply(t testing.TB, manifest string) {
	t.Helper()
	if _, stderr, err := c.KubectlAs(c.kubeconfig, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
}

// KubectlAs runs kubectl with the given kubeconfig (such as one from
// ServiceAccountKubeconfig) and stdin as its standard input.
func (c *Cluster) KubectlAs(kubeconfig, stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectlBin, append([]string{
		"--kubeconfig=" + kubeconfig,
		// Its discovery cache stays with the cluster, not in $HOME.
		"--cache-dir=" + filepath.Join(c.dir, "kubectl-cache"),
	}, args...)...)
	cmd.Env = withoutEnv(os.Environ(), "KUBECONFIG=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	if err = cmd.Run(); ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", kubectlTimeout, err)
	}
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), err
}

// ServiceAccountKubeconfig creates the ServiceAccount namespace/name (and
// its namespace) if missing, gets a token for it from the TokenRequest API
// and returns the path of a kubeconfig that uses the token: a client with
// only the rights RBAC gives that ServiceAccount.
func (c *Cluster) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	c.Apply(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
---
apiVersion: v1
kind: ServiceAccount
metadata:
  namespace: %s
  name: %s
`, namespace, namespace, name))
	token := strings.TrimSpace(c.Kubectl(t, "create", "token", name, "--namespace", namespace, "--duration=24h"))
	path := filepath.Join(c.dir, "sa-"+namespace+"-"+name+".kubeconfig")
	if err := c.writeKubeconfig(path, token); err != nil {
		t.Fatal(err)
	}
	return path
}

func (c *Cluster) writeKubeconfig(path, token string) error {
	return os.WriteFile(path, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kubetest
  user:
    token: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: kubetest
current-context: kubetest
`, c.Server(), base64.StdEncoding.EncodeToString(c.pki.caPEM), token), 0o600)
}

func (c *Cluster) readyz() error {
	req, err := http.NewRequest(http.MethodGet, c.Server()+"/readyz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return get(c.http, req, "")
}

func etcdHealthy(client *http.Client, url string) error {
	req, err := http.NewRequest(http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	return get(client, req, `"health":"true"`)
}

// get does req and wants 200 OK and a body that contains want.
func get(client *http.Client, req *http.Request, want string) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("%s: %s: %s", req.URL.Path, resp.Status, body)
	}
	return nil
}

// etcdEnv is the environment without ETCD_* variables, which etcd would
// read as flags.
func etcdEnv() []string {
	env := withoutEnv(os.Environ(), "ETCD_")
	if runtime.GOARCH != "amd64" {
		env = append(env, "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	}
	return env
}

func withoutEnv(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// freePorts returns n distinct loopback TCP ports free at the time of the call.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
