package nodes

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/k8s/client"
)

// With --ipam=kubernetes this node's pod CIDRs are spec.podCIDRs of its
// Node object (named --node-name), which the controller manager sets
// (--allocate-node-cidrs) once the kubelet has registered the node, and
// which never change afterwards (the API server refuses to). So they are
// read once, at start: the IPAM waits for them before the agent opens its
// socket, and the CiliumNode announces them. Only `get` on nodes is
// needed.

// PodCIDRWait bounds the wait for the Node object's spec.podCIDRs.
const PodCIDRWait = 2 * time.Minute

// nodePodCIDRs reads this node's pod CIDRs from its Node object.
type nodePodCIDRs struct {
	cs   *client.Clientset
	log  *slog.Logger
	wait time.Duration // PodCIDRWait
	poll time.Duration // between two reads of the Node
	tell time.Duration // between two "still waiting" log lines

	mu    sync.Mutex
	cidrs []string
	done  chan struct{} // closed once cidrs are known
}

// newNodePodCIDRs is nil unless --ipam=kubernetes, which needs
// Kubernetes mode.
func newNodePodCIDRs(cs *client.Clientset, cfg ipam.Config, log *slog.Logger) (*nodePodCIDRs, error) {
	if !cfg.Kubernetes() {
		return nil, nil
	}
	if !cs.IsEnabled() {
		return nil, fmt.Errorf("--ipam=%s takes the pod CIDRs from this node's Node object: it needs Kubernetes mode (--k8s-kubeconfig, or running in a pod); without it use --ipam=%s with --pod-cidr", ipam.ModeKubernetes, ipam.ModeLocal)
	}
	return &nodePodCIDRs{cs: cs, log: log, wait: PodCIDRWait, poll: time.Second, tell: 10 * time.Second, done: make(chan struct{})}, nil
}

// source is s as the IPAM sees it: nil (no interface holding a nil
// pointer) unless --ipam=kubernetes.
func source(s *nodePodCIDRs) ipam.PodCIDRSource {
	if s == nil {
		return nil
	}
	return s
}

func (s *nodePodCIDRs) what() string {
	return "spec.podCIDRs of Node " + s.cs.NodeName
}

// PodCIDRs reads the Node until it has pod CIDRs, for at most s.wait.
func (s *nodePodCIDRs) PodCIDRs(ctx context.Context) (string, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cidrs != nil {
		return s.what(), s.cidrs, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	start := time.Now()
	var told time.Time
	for {
		cidrs, why := s.read(ctx)
		if cidrs != nil {
			s.log.Info("Pod CIDRs from the Node object (--ipam=kubernetes)", "node", s.cs.NodeName, "podCIDRs", cidrs)
			s.cidrs = cidrs
			close(s.done)
			return s.what(), cidrs, nil
		}
		if time.Since(told) >= s.tell {
			s.log.Info("Waiting for this node's pod CIDRs (--ipam=kubernetes): the agent serves no pod until the Node object has spec.podCIDRs",
				"node", s.cs.NodeName, "reason", why, "waited", time.Since(start).Round(time.Second), "limit", s.wait)
			told = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("--ipam=%s: no pod CIDRs for this node after %s: %s. The controller manager assigns them with --allocate-node-cidrs (and --cluster-cidr); else set them (`kubectl patch node %s -p '{\"spec\":{\"podCIDRs\":[\"10.1.0.0/24\"]}}'`), or run the agent with --ipam=%s and --pod-cidr",
				ipam.ModeKubernetes, time.Since(start).Round(time.Second), why, s.cs.NodeName, ipam.ModeLocal)
		case <-time.After(s.poll):
		}
	}
}

// read gets the Node's pod CIDRs, or says why there are none yet.
func (s *nodePodCIDRs) read(ctx context.Context) ([]string, string) {
	node, err := s.cs.CoreV1().Nodes().Get(ctx, s.cs.NodeName, metav1.GetOptions{})
	switch {
	case k8serrors.IsNotFound(err):
		return nil, fmt.Sprintf("Node %s does not exist (yet: the kubelet registers it)", s.cs.NodeName)
	case err != nil:
		return nil, fmt.Sprintf("reading Node %s: %v", s.cs.NodeName, err)
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR} // set by an older controller
	}
	if len(cidrs) == 0 {
		return nil, fmt.Sprintf("Node %s has no spec.podCIDRs yet", s.cs.NodeName)
	}
	return cidrs, ""
}

// prefixes are the known CIDRs as prefixes, once they are (the IPAM has
// validated them: the agent does not start otherwise).
func (s *nodePodCIDRs) prefixes(ctx context.Context) ([]netip.Prefix, bool) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, false
	}
	var out []netip.Prefix
	for _, c := range s.cidrs {
		if p, err := netip.ParsePrefix(strings.TrimSpace(c)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out, true
}
