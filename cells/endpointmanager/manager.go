package endpointmanager

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

// Errors callers tell apart with errors.Is / errors.As.
var (
	// ErrIDAlreadySet: AddEndpoint is for new endpoints; IDs are the
	// manager's to give. See AddEndpoint.
	ErrIDAlreadySet = errors.New("endpoint ID is already set")
	ErrNotFound     = errors.New("endpoint not found")
)

// DuplicateError says which existing endpoint holds what a new one wants.
type DuplicateError struct {
	What   string // "endpoint ID 7", "CNI attachment c1:eth0", "IP 10.0.0.3"
	Holder *tables.Endpoint
}

func (e *DuplicateError) Error() string {
	holder := fmt.Sprintf("endpoint %d", e.Holder.ID)
	if p := e.Holder.PodName(); p != "" {
		holder += " (pod " + p + ")"
	}
	return fmt.Sprintf("%s is already in use by %s, container %s", e.What, holder, e.Holder.ContainerID)
}

// EndpointManager owns the endpoints table's rows: it creates them, gives
// them IDs, restores them after a restart and deletes them. Other cells
// advance existing rows through their lifecycle. Whoever wants to know
// that endpoints come and go follows the table (Changes), as every other
// reader of a table does: the manager tells no one.
type EndpointManager struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.RWTable[*tables.Endpoint]
	pods      statedb.Table[*tables.Pod]
	ids       *idAllocator
	// persister saves endpoints.json; nil in tests that persist nothing.
	persister *persister
}

// AddEndpoint makes a new endpoint known: it checks that no other
// endpoint holds its ID, CNI attachment or addresses, gives it a
// node-unique ID, gives it its pod's labels if the pod is known, and
// inserts it. It returns once endpoints.json holds it.
//
// The duplicate check is the only one on the create path, and it runs in
// the insert's write transaction, so two concurrent requests for one
// address cannot both win. It fails with a *DuplicateError naming the
// holder (the API answers 409).
//
// The endpoint must not carry an ID yet (ErrIDAlreadySet). IDs are the
// manager's to give: an ID chosen by a caller could collide with one being
// handed out concurrently, and "ID != 0" is how the rest of the system
// recognises an endpoint the manager already knows. Callers holding an
// endpoint with an ID (a restore from the state dir) use RestoreEndpoint.
// The ID refusal comes after the duplicate check, so a request naming an
// ID in use learns which endpoint holds it rather than only that IDs are
// not its to choose.
func (m *EndpointManager) AddEndpoint(ep *tables.Endpoint) (*tables.Endpoint, error) {
	ep, rev, err := m.insertNew(ep, func(txn statedb.ReadTxn, ep *tables.Endpoint) error {
		if ep.ID != 0 {
			return fmt.Errorf("%w to %d: new endpoints get their ID from the agent, send 0", ErrIDAlreadySet, ep.ID)
		}
		id, err := m.ids.allocate()
		if err != nil {
			return err
		}
		ep.ID = id
		if ep.Created.IsZero() {
			ep.Created = time.Now()
		}
		if ep.State == "" {
			ep.State = tables.StateWaitingForIdentity
		}
		// A pod already known gives its labels now, so the common case
		// needs no round through the pod labels controller.
		if ep.K8sPodName != "" {
			if pod, _, ok := m.pods.Get(txn, tables.PodKeyIndex.Query(ep.PodName())); ok {
				setPodLabels(ep, pod)
			}
		}
		ep.AddLog("ok", "endpoint created")
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("endpoint created", "id", ep.ID, "container", ep.CNIAttachmentID(), "pod", ep.PodName())
	if err := m.waitSaved(rev); err != nil {
		return nil, fmt.Errorf("endpoint %d created: %w", ep.ID, err)
	}
	return ep, nil
}

// RestoreEndpoint re-inserts an endpoint known before a restart, keeping
// its ID. It starts in state restoring. Its own check fails only for a
// state file that contradicts itself (an ID, attachment or address listed
// twice, an ID out of range).
func (m *EndpointManager) RestoreEndpoint(ep *tables.Endpoint) (*tables.Endpoint, error) {
	ep, _, err := m.insertNew(ep, func(_ statedb.ReadTxn, ep *tables.Endpoint) error {
		if !m.ids.reuse(ep.ID) {
			return fmt.Errorf("restore endpoint %d: ID out of range or already in use", ep.ID)
		}
		ep.State = tables.StateRestoring
		ep.AddLog("ok", "endpoint restored after agent restart")
		return nil
	})
	return ep, err
}

// insertNew inserts a clone of ep as a new row, in one write transaction
// with the duplicate check. prepare runs after the check, in the same
// transaction, and gives the row its ID (which it has reserved in the
// allocator); the ID is released if the insert fails. It returns the
// revision of the insert.
func (m *EndpointManager) insertNew(ep *tables.Endpoint, prepare func(txn statedb.ReadTxn, ep *tables.Endpoint) error) (*tables.Endpoint, statedb.Revision, error) {
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	if err := m.checkDuplicates(wtxn, ep); err != nil {
		return nil, 0, err
	}
	ep = ep.Clone()
	if err := prepare(wtxn, ep); err != nil {
		return nil, 0, err
	}
	if _, _, err := m.endpoints.Insert(wtxn, ep); err != nil {
		m.ids.release(ep.ID)
		return nil, 0, err
	}
	rev := m.endpoints.Revision(wtxn)
	wtxn.Commit()
	return ep, rev, nil
}

// checkDuplicates reports the first existing endpoint that holds ep's ID,
// CNI attachment or one of its addresses.
func (m *EndpointManager) checkDuplicates(txn statedb.ReadTxn, ep *tables.Endpoint) error {
	if ep.ID != 0 {
		if old, _, ok := m.endpoints.Get(txn, tables.EndpointIDIndex.Query(ep.ID)); ok {
			return &DuplicateError{What: "endpoint ID " + strconv.Itoa(int(ep.ID)), Holder: old}
		}
	}
	if old, _, ok := m.endpoints.Get(txn, tables.EndpointCNIAttachmentIndex.Query(ep.CNIAttachmentID())); ok {
		return &DuplicateError{What: "CNI attachment " + ep.CNIAttachmentID(), Holder: old}
	}
	for _, ip := range ep.IPs() {
		if old, _, ok := m.endpoints.Get(txn, tables.EndpointIPIndex.Query(ip)); ok {
			return &DuplicateError{What: "IP " + ip.String(), Holder: old}
		}
	}
	return nil
}

// RemoveEndpoint deletes an endpoint: it goes through disconnecting, its
// row is removed (the datapath rows derived from it follow), its ID is
// freed. It returns once endpoints.json no longer holds it.
func (m *EndpointManager) RemoveEndpoint(id uint16, why string) (*tables.Endpoint, error) {
	ep, rev, err := m.modify(id, func(wtxn statedb.WriteTxn, ep *tables.Endpoint) error {
		_ = ep.SetState(tables.StateDisconnecting, why)
		_ = ep.SetState(tables.StateDisconnected, why)
		_, _, err := m.endpoints.Delete(wtxn, ep)
		return err
	})
	if err != nil {
		return nil, err
	}
	m.ids.release(id)
	m.log.Info("endpoint deleted", "id", id, "container", ep.CNIAttachmentID(), "reason", why)
	if err := m.waitSaved(rev); err != nil {
		return nil, fmt.Errorf("endpoint %d deleted: %w", id, err)
	}
	return ep, nil
}

// Update applies fn to a clone of the current row of endpoint id and
// stores it, in one write transaction. fn may return an error to abort.
func (m *EndpointManager) Update(id uint16, fn func(ep *tables.Endpoint) error) (*tables.Endpoint, error) {
	ep, _, err := m.modify(id, func(wtxn statedb.WriteTxn, ep *tables.Endpoint) error {
		if err := fn(ep); err != nil {
			return err
		}
		_, _, err := m.endpoints.Insert(wtxn, ep)
		return err
	})
	return ep, err
}

// modify runs write on a clone of endpoint id's row in a write
// transaction, which commits unless write fails. It returns the clone and
// the revision of the write.
func (m *EndpointManager) modify(id uint16, write func(wtxn statedb.WriteTxn, ep *tables.Endpoint) error) (*tables.Endpoint, statedb.Revision, error) {
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	ep, _, ok := m.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok {
		return nil, 0, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	ep = ep.Clone()
	if err := write(wtxn, ep); err != nil {
		return nil, 0, err
	}
	rev := m.endpoints.Revision(wtxn)
	wtxn.Commit()
	return ep, rev, nil
}
