package endpointmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// podLabels returns the labels an endpoint of pod p carries: the pod's
// labels with source k8s, plus its namespace.
func podLabels(p *tables.Pod) labels.Labels {
	ls := labels.FromMap(p.Labels, labels.SourceK8s)
	return labels.Merge(ls, labels.Labels{{Source: labels.SourceK8s, Key: labels.NamespaceKey, Value: p.Namespace}})
}

// setPodLabels gives ep the labels of its pod p (and p's UID if ep has
// none) and marks its labels resolved; it reports false if they already
// were, with these labels. It is the one place pod labels reach an
// endpoint: AddEndpoint when the pod is known at creation, the pod labels
// controller when the pod appears or changes later.
func setPodLabels(ep *tables.Endpoint, p *tables.Pod) bool {
	want := podLabels(p)
	if ep.LabelsResolved && want.Equal(ep.PodLabels) {
		return false
	}
	ep.PodLabels, ep.LabelsResolved = want, true
	if ep.K8sUID == "" {
		ep.K8sUID = p.UID
	}
	return true
}

// podLabelsController makes endpoint labels follow the pods table: an
// endpoint that names a pod takes the pod's labels when the pod becomes
// known and whenever they change (its identity follows, through the
// identity allocator). An endpoint whose pod stays unknown past
// --pod-metadata-timeout becomes invalid rather than run under a
// placeholder identity; its sync-build request then fails and the CNI ADD
// is rolled back, so the runtime retries it.
type podLabelsController struct {
	m       *EndpointManager
	timeout time.Duration
}

func (c *podLabelsController) run(ctx context.Context, health cell.Health) error {
	m := c.m
	wtxn := m.db.WriteTxn(m.endpoints, m.pods)
	epChanges, err := m.endpoints.Changes(wtxn)
	if err != nil {
		wtxn.Abort()
		return err
	}
	podChanges, err := m.pods.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return err
	}
	defer epChanges.Close()
	defer podChanges.Close()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		txn := m.db.ReadTxn()
		dirty := map[uint16]struct{}{}
		podSeq, podWatch := podChanges.Next(txn)
		for ch := range podSeq {
			for ep := range m.endpoints.List(txn, tables.EndpointPodIndex.Query(ch.Object.Key())) {
				dirty[ep.ID] = struct{}{}
			}
		}
		epSeq, epWatch := epChanges.Next(txn)
		for ch := range epSeq {
			if !ch.Deleted && !ch.Object.LabelsResolved {
				dirty[ch.Object.ID] = struct{}{}
			}
		}
		// Endpoints still waiting get another look when their bound expires.
		next := time.Duration(-1)
		for ep := range m.endpoints.List(txn, tables.EndpointStateIndex.Query(tables.StateWaitingForIdentity)) {
			if ep.LabelsResolved {
				continue
			}
			left := time.Until(ep.Created.Add(c.timeout))
			if left <= 0 {
				dirty[ep.ID] = struct{}{}
			} else if next < 0 || left < next {
				next = left
			}
		}
		for id := range dirty {
			if err := c.sync(id); err != nil {
				health.Degraded("pod labels", err)
			}
		}
		if next >= 0 {
			timer.Reset(next + 10*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-podWatch:
		case <-epWatch:
		case <-timer.C:
		}
	}
}

// sync brings one endpoint's pod labels up to date.
func (c *podLabelsController) sync(id uint16) error {
	m := c.m
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	ep, _, ok := m.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok || ep.K8sPodName == "" {
		return nil
	}
	switch ep.State {
	case tables.StateDisconnecting, tables.StateDisconnected, tables.StateInvalid:
		return nil
	}
	pod, _, found := m.pods.Get(wtxn, tables.PodKeyIndex.Query(ep.PodName()))
	ep = ep.Clone()
	switch {
	case found:
		first := !ep.LabelsResolved
		if !setPodLabels(ep, pod) {
			return nil
		}
		msg := "pod labels changed: " + ep.PodLabels.String()
		if first {
			msg = "pod labels known: " + ep.PodLabels.String()
		}
		if err := ep.Relabelled(msg); err != nil {
			return err
		}
	case !ep.LabelsResolved && time.Since(ep.Created) >= c.timeout:
		msg := fmt.Sprintf("pod %s is not known to the agent after %s: register its labels before it starts, "+
			"e.g. `membrane pod label %s KEY=VALUE...` (or membrane pod apply -f, PUT /v1/pod, --pod-manifest-dir)",
			ep.PodName(), c.timeout, ep.PodName())
		if err := ep.SetState(tables.StateInvalid, msg); err != nil {
			return err
		}
		ep.Log[len(ep.Log)-1].Code = "failure"
	default:
		// The pod went away while the endpoint lives, or is not known yet:
		// keep what we have.
		return nil
	}
	if _, _, err := m.endpoints.Insert(wtxn, ep); err != nil {
		return err
	}
	wtxn.Commit()
	return nil
}
