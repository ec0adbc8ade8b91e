// Package endpoints keeps a CiliumEndpoint (CEP) in the API server for
// each endpoint of a Kubernetes pod of this node, as Cilium's agent does,
// so `kubectl get cep -A` shows every pod's endpoint ID, identity,
// enforcement, state and addresses. A CEP is named like its pod, in the
// pod's namespace, owned by the Pod (ownerReference with the pod's UID)
// and labelled membrane.io/node=NODE.
//
// It is a reconciler (statedb/reconciler), in two halves:
//
//   - a controller derives the desired CEPs, the cilium-endpoints table,
//     from the endpoints, pods (source k8s: the Pod objects of this node)
//     and identities tables. A row appears when an endpoint first becomes
//     ready, changes only when something the cluster sees changes (the
//     identity the datapath enforces, addresses, enforcement, ready or
//     not), and goes when the endpoint is deleted (CNI DEL) or its pod is.
//   - the reconciler writes the rows to the API server: one create per
//     pod start, one update (conditional on the resourceVersion) per
//     visible change, one delete (conditional on the CEP's UID and
//     resourceVersion, so another node's CEP of a pod of the same name is
//     never touched). Failed writes are retried with backoff; CNI ADD
//     never waits for them, and they leave the agent healthy.
//
// Pruning, the full reconciliation, lists this node's CEPs by label,
// deletes those no local endpoint explains and writes those missing or
// stale (an owner UID of an earlier pod of the same name is repaired). It
// runs once the desired rows are complete (endpoints restored, this
// node's Pod objects listed: never before, or it would delete the CEPs of
// pods not yet known), whenever the API server comes back, and every few
// minutes.
//
// Reads: endpoints, pods, identities, k8s-status. Writes: cilium-endpoints,
// the k8s-status row "ciliumendpoints" (the CEPs and writes so far), and
// CiliumEndpoint objects.
// Try it: membrane statedb cilium-endpoints; kubectl get cep -A -l membrane.io/node=NODE.
package endpoints

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	"github.com/membrane-net/membrane/k8s/client"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell keeps this node's CiliumEndpoints in Kubernetes mode.
var Cell = cell.Module(
	"k8s-endpoints",
	"CiliumEndpoints of the pods of this node",
	cell.Invoke(register),
)

// pruneInterval: the full reconciliation also repairs CEPs changed or
// deleted behind the agent's back.
const pruneInterval = 5 * time.Minute

type params struct {
	cell.In

	Clientset  *client.Clientset
	Registered *crds.Registered
	Status     *k8scell.Status
	Jobs       job.Group
	Log        *slog.Logger
	DB         *statedb.DB
	CEPs       statedb.RWTable[*tables.CiliumEndpoint]
	Endpoints  statedb.Table[*tables.Endpoint]
	Pods       statedb.Table[*tables.Pod]
	Identities statedb.Table[*tables.Identity]
	K8sStatus  statedb.Table[*tables.K8sStatus]
}

func register(p params, rp reconciler.Params, jobs job.Registry, health cell.Health) error {
	if !p.Clientset.IsEnabled() {
		return nil
	}
	// The reconciler reports failed writes as degraded health, which
	// would make the agent unhealthy, and CNI STATUS fail, while the API
	// server is away: the node's pods need no CEP to be served. Its
	// errors are reported as OK with the error (and in k8s-status).
	rp.JobGroup = jobs.NewGroup(outageTolerant{health})
	wtxn := p.DB.WriteTxn(p.CEPs)
	initDone := p.CEPs.RegisterInitializer(wtxn, "k8s-endpoints")
	wtxn.Commit()

	w := newWriter(p.Clientset, p.Registered, p.Status, p.Log)
	rec, err := reconciler.Register(rp, p.CEPs,
		(*tables.CiliumEndpoint).Clone, (*tables.CiliumEndpoint).SetStatus, (*tables.CiliumEndpoint).GetStatus,
		w, nil,
		reconciler.WithPruning(pruneInterval),
		reconciler.WithRetry(100*time.Millisecond, 10*time.Second),
		reconciler.WithName(p.CEPs.Name()), // the table label of membrane_reconciler_*
		// The API server holds what was written; a periodic rewrite of
		// unchanged rows would only cost it (pruning repairs drift).
		reconciler.WithRefreshing(0, nil))
	if err != nil {
		return err
	}
	w.retryPrune = rec.Prune
	c := &controller{
		db: p.DB, ceps: p.CEPs, k8sStatus: p.K8sStatus, initDone: initDone, prune: rec.Prune,
		src: sources{endpoints: p.Endpoints, pods: p.Pods, identities: p.Identities},
	}
	p.Jobs.Add(job.OneShot("derive-cilium-endpoints", c.run))
	return nil
}

// outageTolerant reports a Degraded health as OK with the reason and the
// error.
type outageTolerant struct{ cell.Health }

func (h outageTolerant) Degraded(reason string, err error) {
	h.Health.OK(fmt.Sprintf("%s (API server writes failing, retried): %v", reason, err))
}

func (h outageTolerant) NewScope(name string) cell.Health {
	return outageTolerant{h.Health.NewScope(name)}
}
