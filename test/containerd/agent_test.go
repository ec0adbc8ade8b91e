package containerd

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// agent is membrane-agent on temporary paths (socket, state dir, bpffs
// dir, a free pod CIDR), writing its conflist into the CRI plugin's conf
// dir once it serves: the way a node installs it. Start runs it again
// after Stop, with the same socket, state and bpffs dirs, as systemd
// restarts it.
type agent struct {
	*e2eutil.Agent
	Conflist string
	tb       testing.TB
}

// startAgent runs the agent and waits until it answers /v1/healthz. The
// caller stops it (the env does, after containerd).
func startAgent(tb testing.TB, dir, socket, bpfRoot, conflist string, extra ...string) (*agent, error) {
	a := &agent{Conflist: conflist, tb: tb, Agent: e2eutil.NewAgent(tb, e2eutil.AgentConfig{
		Binary:      bins.Agent,
		Dir:         dir,
		Socket:      socket,
		StateDir:    filepath.Join(dir, "agent-state"),
		BPFRoot:     bpfRoot,
		Pool:        e2eutil.PoolContainerd,
		Extra:       append([]string{"--write-cni-conf-when-ready", conflist}, extra...),
		ReadyWithin: 30 * time.Second,
	})}
	return a, a.Start()
}

// ctxT bounds an API call; it is cancelled when the test ends.
var ctxT = e2eutil.Context

// putPod registers a pod's labels, as a Kubernetes pod watcher would
// before kubelet asks the runtime for its sandbox.
func (a *agent) putPod(ns, name, uid string, labels map[string]string) {
	a.tb.Helper()
	a.PutPod(models.Pod{Namespace: ns, Name: name, UID: uid, Labels: labels})
}

// endpointOf is the endpoint of a sandbox (its CNI container ID), or nil.
func (a *agent) endpointOf(sandboxID string) *models.Endpoint {
	a.tb.Helper()
	for _, ep := range a.Endpoints() {
		if ep.ContainerID == sandboxID {
			return &ep
		}
	}
	return nil
}
