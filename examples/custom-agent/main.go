// custom-agent is a Membrane agent assembled from a chosen set of cells,
// to show that an agent is nothing but the list of cells in its hive (see
// docs/custom-agent.md). It differs from membrane-agent in one cell: the
// pod metadata source.
//
// membrane-agent takes pod labels from the API and from Pod manifests
// (cells/podmeta). This agent has no such source and no /v1/pod routes.
// Instead, namespaceOnly registers every pod an endpoint names, with no
// labels of its own: an endpoint then carries only its namespace label
// (k8s:io.kubernetes.pod.namespace=NS), so every pod of a namespace shares
// one identity — namespace isolation, whatever the pods are labelled.
//
// Nothing else changes: the endpoint manager still waits for the pod's row
// and merges its labels, the identity allocator and regeneration react to
// the endpoints table as before. The new cell talks to them only through
// the pods table.
//
// Run it like membrane-agent (same flags, minus --pod-manifest-dir):
//
//	go build -o bin/custom-agent ./examples/custom-agent
//	bin/custom-agent --socket /tmp/custom.sock --state-dir /tmp/custom-state \
//	    --bpf-root /sys/fs/bpf/membrane-custom --pod-cidr 10.201.0.0/24
//	MEMBRANE_SOCKET=/tmp/custom.sock membrane identity list
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/endpointapi"
	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/hostips"
	"github.com/membrane-net/membrane/cells/identity"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/loader"
	"github.com/membrane-net/membrane/cells/monitor"
	"github.com/membrane-net/membrane/cells/policy"
	"github.com/membrane-net/membrane/cells/policyrepo"
	"github.com/membrane-net/membrane/cells/regeneration"
	"github.com/membrane-net/membrane/cells/status"
	"github.com/membrane-net/membrane/statedb/tables"
)

// newHive lists the agent's cells: cells.DefaultCells with namespaceOnly
// in place of podmeta.Cell. cells.NewAgentHive adds the infrastructure
// (statedb, jobs, health, the shared tables, the state dir) before them
// and the API server and the CNI conflist writer after them, so the
// socket opens only once every cell has started.
func newHive() *hive.Hive {
	return cells.NewAgentHive(
		status.Cell,
		ipam.Cell,
		namespaceOnly,
		endpointmanager.Cell,
		endpointapi.Cell,
		identity.Cell,
		policyrepo.Cell,
		policy.Cell,
		regeneration.Cell,
		loader.Cell,
		monitor.Cell,
		hostips.Cell,
	)
}

func main() {
	h := newHive()
	fs := pflag.NewFlagSet("custom-agent", pflag.ContinueOnError)
	h.RegisterFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := h.Run(log); err != nil {
		log.Error("agent failed", "error", err)
		os.Exit(1)
	}
}

// namespaceOnly is the replacement pod metadata source: a cell that reads
// the endpoints table and writes the pods table, nothing else.
var namespaceOnly = cell.Module(
	"namespace-only-pods",
	"Pods of endpoints registered without labels",

	cell.Invoke(func(db *statedb.DB, jobs job.Group, eps statedb.Table[*tables.Endpoint], pods statedb.RWTable[*tables.Pod]) {
		jobs.Add(job.OneShot("register-pods", func(ctx context.Context, health cell.Health) error {
			return registerPods(ctx, health, db, eps, pods)
		}))
	}),
)

const source = "namespace-only"

// registerPods reacts to endpoint changes: a pod an endpoint names gets a
// row (if no one else wrote one); a row of ours whose last endpoint went
// is removed.
func registerPods(ctx context.Context, health cell.Health, db *statedb.DB,
	eps statedb.Table[*tables.Endpoint], pods statedb.RWTable[*tables.Pod]) error {
	wtxn := db.WriteTxn(eps)
	changes, err := eps.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return err
	}
	defer changes.Close()
	for {
		wtxn := db.WriteTxn(pods)
		seq, watch := changes.Next(wtxn)
		for change := range seq {
			ep := change.Object
			if ep.K8sPodName == "" {
				continue
			}
			key := ep.PodName()
			row, _, found := pods.Get(wtxn, tables.PodKeyIndex.Query(key))
			_, _, inUse := eps.Get(wtxn, tables.EndpointPodIndex.Query(key))
			switch {
			case !found && inUse:
				pods.Insert(wtxn, &tables.Pod{Namespace: ep.K8sNamespace, Name: ep.K8sPodName, UID: ep.K8sUID, Source: source})
			case found && !inUse && row.Source == source:
				pods.Delete(wtxn, row)
			}
		}
		wtxn.Commit()
		health.OK(fmt.Sprintf("%d pods", pods.NumObjects(db.ReadTxn())))
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		}
	}
}
