package endpointmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// endpointsFile holds every endpoint, so a restarted agent restores them
// with their IDs and identities instead of forgetting running pods.
const endpointsFile = "endpoints.json"

// errNotSaved: the persister stopped (the agent is shutting down) before
// it saved a change someone waits for.
var errNotSaved = errors.New("not saved: the endpoint manager is stopping")

// persister is the one writer of endpoints.json. It follows the endpoints
// table's changes, so it saves whatever a restore needs whoever changed
// it: creation and deletion by the manager, and what other cells write
// into the rows (pod labels, identity, enforcement). Changes that arrive
// together are saved in one write.
//
// Nothing acknowledged may be lost to a crash. Once membrane-cni's ADD
// has answered, the runtime starts the pod; an agent killed then and
// restarted without the endpoint in its file would forget a running pod.
// So AddEndpoint and RemoveEndpoint return only once the persister has
// saved the table as of their commit (waitSaved): the API's answer, and
// through it the plugin's, comes after the file holds the change, and an
// agent killed right after restores it. Changes by other cells reach the
// file moments after they commit; a restart in between restores the
// endpoint as last saved, and the controllers redo the rest (the identity
// of the same labels is persisted by the allocator; regeneration rewrites
// the datapath rows).
//
// The persister runs from the endpoint manager's start hook to its stop
// hook, not as a job: jobs stop before every other hook, so a request the
// API server is still finishing during shutdown would wait for a writer
// that is gone. The stop hook runs after the API server has stopped; the
// persister then saves what is left, so a stopped agent's file holds
// every endpoint with its latest identity (what the restart tests, in
// cells/agent_test.go and test/e2e, expect back), and stops. Anyone still
// waiting then gets errNotSaved rather than an answer the file does not
// back.
type persister struct {
	m      *EndpointManager
	dir    statedir.Dir
	health cell.Health

	mu      sync.Mutex
	saved   statedb.Revision // the file holds every change up to this revision
	stopped bool
	moved   chan struct{} // closed, and replaced, when saved or stopped changes
}

func newPersister(m *EndpointManager, dir statedir.Dir, health cell.Health) *persister {
	return &persister{m: m, dir: dir, health: health, moved: make(chan struct{})}
}

// waitSaved returns once endpoints.json holds the change the endpoints
// table got at revision rev (see persister).
func (m *EndpointManager) waitSaved(rev statedb.Revision) error {
	p := m.persister
	if p == nil {
		return nil
	}
	for {
		p.mu.Lock()
		saved, stopped, moved := p.saved, p.stopped, p.moved
		p.mu.Unlock()
		switch {
		case saved >= rev:
			return nil
		case stopped:
			return errNotSaved
		}
		<-moved
	}
}

func (p *persister) set(saved statedb.Revision, stopped bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if saved > p.saved || stopped != p.stopped {
		p.saved, p.stopped = max(saved, p.saved), stopped
		close(p.moved)
		p.moved = make(chan struct{})
	}
}

// start follows the table from now on: the iterator's first batch is
// every row (the restored ones), so the file is rewritten once at start,
// without the endpoints that were not restored. stop ends it after a last
// save.
func (p *persister) start() (stop func(), err error) {
	wtxn := p.m.db.WriteTxn(p.m.endpoints)
	changes, err := p.m.endpoints.Changes(wtxn)
	wtxn.Commit()
	if err != nil {
		return nil, err
	}
	p.health.OK("following the endpoints table")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer changes.Close()
		p.run(ctx, changes)
	}()
	return func() { cancel(); <-done }, nil
}

func (p *persister) run(ctx context.Context, changes statedb.ChangeIterator[*tables.Endpoint]) {
	// written is each endpoint's entry of the file as last saved: a change
	// re-encodes only the rows it touched, and the file is these entries
	// joined. Encoding every row on each save made the save, and so each
	// ADD, cost O(endpoints): two thirds of the agent's CPU while 1,000
	// endpoints were created (docs/benchmarks-controlplane.md).
	written := map[uint16]string{}
	for {
		// Once stopping, one last round saves what committed meanwhile.
		last := ctx.Err() != nil
		seq, watch := changes.Next(p.m.db.ReadTxn())
		var upTo statedb.Revision
		changed := false
		for ch, rev := range seq {
			upTo = max(upTo, rev)
			if ch.Deleted {
				delete(written, ch.Object.ID)
				changed = true
				continue
			}
			if s := persisted(ch.Object); written[ch.Object.ID] != s {
				written[ch.Object.ID] = s
				changed = true
			}
		}
		if changed {
			p.save(written)
		}
		p.set(upTo, last)
		if last {
			return
		}
		select {
		case <-ctx.Done():
		case <-watch:
		}
	}
}

// save writes the entries of every endpoint (see persisted), one to a
// line, as a JSON array: what ReadJSON restores. A failure is logged and
// degrades the cell's health but does not fail the requests waiting for
// the save; the next change writes the whole file again.
func (p *persister) save(written map[uint16]string) {
	entries := make([]string, 0, len(written))
	for _, id := range slices.Sorted(maps.Keys(written)) {
		entries = append(entries, written[id])
	}
	buf := statedir.JSONArray(entries)
	if err := p.dir.WriteFile(endpointsFile, buf); err != nil {
		p.m.log.Error("saving endpoints failed", "error", err)
		p.health.Degraded("saving endpoints", fmt.Errorf("%s: %w", p.dir.Path(endpointsFile), err))
		return
	}
	p.health.OK("endpoints saved")
}

// persisted is an endpoint's entry in the file, what a restart needs of
// it: everything but its state and status log, which change several
// times per endpoint and pod start without changing what a restore puts
// back (it starts in state restoring, its log with the restore).
func persisted(ep *tables.Endpoint) string {
	e := *ep
	e.State, e.Log = "", nil
	b, _ := json.Marshal(&e)
	return string(b)
}

// restore re-inserts the endpoints of the previous run whose host
// interface still exists. Endpoints whose veth is gone (the pod was
// removed while the agent was down) are dropped: the runtime's DEL or GC
// releases their addresses. err is a state file that cannot be read (the
// agent must not start over it); lost joins the endpoints that were in it
// but could not be restored.
func (m *EndpointManager) restore(dir statedir.Dir) (lost, err error) {
	var eps []*tables.Endpoint
	found, err := dir.ReadJSON(endpointsFile, &eps)
	if err != nil {
		return nil, fmt.Errorf("restore endpoints: %w", err)
	}
	if !found {
		return nil, nil
	}
	var errs []error
	restored := 0
	for i, ep := range eps {
		if ep == nil {
			return nil, fmt.Errorf("restore endpoints: state file %s: entry %d is null (move the file away to start afresh)", dir.Path(endpointsFile), i)
		}
		if ep.HostIfName != "" {
			link, err := netlink.LinkByName(ep.HostIfName)
			if err != nil || (ep.HostIfIndex != 0 && link.Attrs().Index != ep.HostIfIndex) {
				m.log.Warn("not restoring endpoint: its host interface is gone",
					"id", ep.ID, "interface", ep.HostIfName, "container", ep.CNIAttachmentID())
				continue
			}
		}
		if _, err := m.RestoreEndpoint(ep); err != nil {
			errs = append(errs, err)
			continue
		}
		restored++
	}
	m.log.Info("endpoints restored", "restored", restored, "in-state-file", len(eps))
	return errors.Join(errs...), nil
}
