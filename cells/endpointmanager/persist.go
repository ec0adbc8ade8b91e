package endpointmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/hive/cell"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// endpointsFile holds every endpoint, so a restarted agent restores them
// with their IDs and identities instead of forgetting running pods.
const endpointsFile = "endpoints.json"

type store struct {
	dir statedir.Dir
	mu  sync.Mutex
}

// save writes every endpoint row. Serialised, so the file always reflects
// the table as of some commit.
func (m *EndpointManager) save(s *store) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var eps []*tables.Endpoint
	for ep := range m.endpoints.All(m.db.ReadTxn()) {
		eps = append(eps, ep)
	}
	return s.dir.WriteJSON(endpointsFile, eps)
}

// restore re-inserts the endpoints of the previous run whose host
// interface still exists. Endpoints whose veth is gone (the pod was
// removed while the agent was down) are dropped: the runtime's DEL or GC
// releases their addresses.
func (m *EndpointManager) restore(s *store) error {
	var eps []*tables.Endpoint
	found, err := s.dir.ReadJSON(endpointsFile, &eps)
	if err != nil || !found {
		return err
	}
	var errs []error
	restored := 0
	for _, ep := range eps {
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
	return errors.Join(errs...)
}

// persisted is what a restart needs of an endpoint: everything but its
// state and status log, which change several times per endpoint and pod
// start without changing what a restore puts back.
func persisted(ep *tables.Endpoint) string {
	e := *ep
	e.State, e.Log = "", nil
	b, _ := json.Marshal(&e)
	return string(b)
}

// persistLoop saves the endpoints after every batch of changes made by
// other cells that a restore needs (labels, identity, enforcement).
func (m *EndpointManager) persistLoop(s *store) func(ctx context.Context, health cell.Health) error {
	return func(ctx context.Context, health cell.Health) error {
		wtxn := m.db.WriteTxn(m.endpoints)
		changes, err := m.endpoints.Changes(wtxn)
		wtxn.Commit()
		if err != nil {
			return err
		}
		defer changes.Close()
		saved := map[uint16]string{}
		for {
			seq, watch := changes.Next(m.db.ReadTxn())
			n := 0
			for ch := range seq {
				if ch.Deleted {
					delete(saved, ch.Object.ID)
					n++
					continue
				}
				if p := persisted(ch.Object); saved[ch.Object.ID] != p {
					saved[ch.Object.ID] = p
					n++
				}
			}
			if n > 0 {
				if err := m.save(s); err != nil {
					health.Degraded("saving endpoints", fmt.Errorf("%s: %w", s.dir.Path(endpointsFile), err))
				} else {
					health.OK("endpoints saved")
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-watch:
			}
		}
	}
}
