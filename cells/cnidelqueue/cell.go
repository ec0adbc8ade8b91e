// Package cnidelqueue finishes the CNI DELs that membrane-cni queued while
// the agent was down (internal/delqueue): at start, after the endpoints
// and the IPAM allocations are restored and before the API socket opens,
// each queued DEL is done exactly like an API DEL of its attachment
// (container ID + interface name): the endpoint goes through the endpoint
// manager's delete path (the identity reference, the datapath rows and,
// in Kubernetes mode, the CiliumEndpoint follow the endpoints table) and
// the IPAM releases the attachment's addresses. A DEL of an attachment
// the agent does not know is dropped: it is done already.
//
// The agent holds the queue's lock from before it reads the queue until
// it stops, so no plugin can queue a DEL this agent would miss: a plugin
// that finds the agent down but the lock taken tells the runtime to retry,
// and by then the socket answers.
//
// A queued DEL never removes a later ADD of the same attachment. None can
// exist in the normal order: the DEL was queued while no agent ran, and
// the queue is processed before this agent serves any ADD. But an entry
// kept after a failed processing (the state dir could not be written)
// waits for the next start, and the attachment may be re-added meanwhile,
// so an endpoint is removed only if it was created before the DEL was
// queued and sits on the host veth the DEL removed (its ifindex), and an
// address is released only if it was allocated before the DEL. The times
// are wall-clock times of the same node: a clock stepped back between a
// DEL and a re-ADD could make the new endpoint look older, which the
// ifindex check then catches.
//
// A queue file that is not a DEL is set aside as .NAME.corrupt in the
// queue directory, with an error in the log; the agent starts anyway.
//
// Reads: endpoints. Writes: endpoints (through the endpoint manager), IPAM
// allocations (through the IPAM). Try it: stop the agent, `cnitool del` a
// pod, ls /var/lib/membrane/cni-del-queue, start the agent and look for
// "Queued CNI DEL done" in its log; `membrane endpoint list` and `membrane
// ipam list` no longer show the pod.
package cnidelqueue

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/endpointmanager"
	"github.com/membrane-net/membrane/cells/ipam"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/internal/delqueue"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Cell processes the queue at start and holds it while the agent runs.
var Cell = cell.Module(
	"cni-del-queue",
	"CNI DELs queued while the agent was down",

	cell.Invoke(register),
)

type params struct {
	cell.In

	Lifecycle cell.Lifecycle
	Log       *slog.Logger
	StateDir  statedir.Dir
	DB        *statedb.DB
	Endpoints statedb.Table[*tables.Endpoint]
	// The endpoint manager and the IPAM own what a DEL removes; depending
	// on them also puts this cell's start hook after theirs (restored).
	Manager *endpointmanager.EndpointManager
	IPAM    *ipam.IPAM
}

func register(p params) {
	q := &processor{log: p.Log, db: p.DB, endpoints: p.Endpoints, manager: p.Manager, ipam: p.IPAM}
	var lock *delqueue.Lock
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(ctx cell.HookContext) error {
			var err error
			lock, err = delqueue.Acquire(ctx, p.StateDir.Path(""), func() {
				p.Log.Info("Waiting for membrane-cni to finish queueing DELs before reading the queue", "dir", delqueue.Dir(p.StateDir.Path("")))
			})
			if err != nil {
				return err
			}
			q.run(lock)
			return nil
		},
		// Stop hooks run in reverse: the socket is closed by now.
		OnStop: func(cell.HookContext) error { return lock.Unlock() },
	})
}

// endpointRemover and addressReleaser are what a DEL needs of the
// endpoint manager and the IPAM, so that tests can fail them.
type endpointRemover interface {
	RemoveEndpoint(id uint16, why string) (*tables.Endpoint, error)
}

type addressReleaser interface {
	List(owner string) []*tables.IPAMAllocation
	Release(ip netip.Addr) (*tables.IPAMAllocation, error)
}

type processor struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.Table[*tables.Endpoint]
	manager   endpointRemover
	ipam      addressReleaser
}

// run processes every entry; what fails stays queued for the next start.
func (q *processor) run(lock *delqueue.Lock) {
	items, err := lock.Items()
	if err != nil {
		q.log.Error("Could not read the CNI DEL queue; its DELs wait for the next start", "dir", lock.Dir(), "error", err)
		return
	}
	if len(items) == 0 {
		return
	}
	done, failed := 0, 0
	for _, it := range items {
		if it.Err != nil {
			to, err := lock.SetAside(it.Name)
			q.log.Error("Not a queued CNI DEL: set aside; if it was one, run `membrane endpoint delete` and `membrane ipam release` for its pod",
				"file", lock.Path(it.Name), "moved-to", to, "reason", it.Err, "error", err)
			continue
		}
		e := it.Entry
		if err := q.del(e); err != nil {
			failed++
			q.log.Error("Queued CNI DEL failed; it stays queued for the next start",
				"attachment", e.Owner(), "pod", e.Pod, "queued", e.Queued, "error", err)
			continue
		}
		if err := lock.Remove(it.Name); err != nil {
			q.log.Warn("Queued CNI DEL done but its file could not be removed (it is harmless to do again)",
				"file", lock.Path(it.Name), "error", err)
		}
		done++
	}
	q.log.Info("CNI DEL queue processed", "done", done, "failed", failed, "dir", lock.Dir())
}

// del is an API DEL of the entry's attachment, restricted to what existed
// when it was queued.
func (q *processor) del(e *delqueue.Entry) error {
	owner := e.Owner()
	ep, _, found := q.endpoints.Get(q.db.ReadTxn(), tables.EndpointCNIAttachmentIndex.Query(owner))
	if found {
		if newer := laterAttachment(ep, e); newer != "" {
			q.log.Info("Queued CNI DEL dropped: the attachment was added again after it", "attachment", owner,
				"pod", e.Pod, "endpoint", ep.ID, "why", newer)
			return nil
		}
		if _, err := q.manager.RemoveEndpoint(ep.ID, "CNI DEL queued while the agent was down"); err != nil &&
			!errors.Is(err, endpointmanager.ErrNotFound) {
			return fmt.Errorf("deleting endpoint %d: %w", ep.ID, err)
		}
	}
	var errs []error
	released := 0
	for _, a := range q.ipam.List(owner) {
		if !a.Created.Before(e.Queued) {
			q.log.Info("Queued CNI DEL keeps an address allocated after it", "attachment", owner, "ip", a.IP, "allocated", a.Created)
			continue
		}
		if _, err := q.ipam.Release(a.IP); err != nil && !errors.Is(err, ipam.ErrNotAllocated) {
			errs = append(errs, fmt.Errorf("releasing %s: %w", a.IP, err))
			continue
		}
		released++
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	q.log.Info("Queued CNI DEL done", "attachment", owner, "pod", e.Pod, "queued", e.Queued,
		"endpoint-removed", found, "addresses-released", released)
	return nil
}

// laterAttachment says why ep is not the attachment the DEL was about,
// "" if it is.
func laterAttachment(ep *tables.Endpoint, e *delqueue.Entry) string {
	if !ep.Created.Before(e.Queued) {
		return fmt.Sprintf("endpoint created %s, DEL queued %s", ep.Created, e.Queued)
	}
	if e.HostIfIndex != 0 && ep.HostIfIndex != e.HostIfIndex {
		return fmt.Sprintf("endpoint on ifindex %d, the DEL removed ifindex %d", ep.HostIfIndex, e.HostIfIndex)
	}
	return ""
}
