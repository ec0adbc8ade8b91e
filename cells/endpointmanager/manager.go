package endpointmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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
	ErrInvalidID    = errors.New("invalid endpoint ID")
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

// Subscriber is told when endpoints come and go, after the change is
// committed. Calls are serialised; keep them short.
type Subscriber interface {
	EndpointCreated(ep *tables.Endpoint)
	EndpointDeleted(ep *tables.Endpoint)
}

// EndpointManager owns the endpoints table's rows: it creates them, gives
// them IDs, restores them after a restart and deletes them. Other cells
// advance existing rows through their lifecycle.
type EndpointManager struct {
	log       *slog.Logger
	db        *statedb.DB
	endpoints statedb.RWTable[*tables.Endpoint]
	ids       *idAllocator
	persist   func() // set by the persistence job; writes endpoints.json

	mu          sync.Mutex
	subscribers []Subscriber
}

// Subscribe registers s for creation and deletion events.
func (m *EndpointManager) Subscribe(s Subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subscribers = append(m.subscribers, s)
}

func (m *EndpointManager) notify(fn func(Subscriber)) {
	m.mu.Lock()
	subs := append([]Subscriber(nil), m.subscribers...)
	m.mu.Unlock()
	for _, s := range subs {
		fn(s)
	}
}

// AddEndpoint makes a new endpoint known: it gives it a node-unique ID,
// checks that no other endpoint holds its CNI attachment or addresses,
// inserts it and tells subscribers.
//
// The endpoint must not carry an ID yet. IDs are the manager's to give:
// an ID chosen by a caller could collide with one being handed out
// concurrently, and "ID != 0" is how the rest of the system recognises an
// endpoint the manager already knows. Callers holding an endpoint with an
// ID (a restore from the state dir) use RestoreEndpoint, which checks the
// ID for duplicates instead. The API manager's duplicate-ID check before
// this call therefore only fires for requests that name an explicit ID.
func (m *EndpointManager) AddEndpoint(ep *tables.Endpoint) (*tables.Endpoint, error) {
	if ep.ID != 0 {
		return nil, fmt.Errorf("%w to %d: new endpoints get their ID from the agent, send 0", ErrIDAlreadySet, ep.ID)
	}
	id, err := m.ids.allocate()
	if err != nil {
		return nil, err
	}
	ep = ep.Clone()
	ep.ID = id
	if ep.Created.IsZero() {
		ep.Created = time.Now()
	}
	if ep.State == "" {
		ep.State = tables.StateWaitingForIdentity
	}
	ep.AddLog("ok", "endpoint created")
	if err := m.insertNew(ep); err != nil {
		m.ids.release(id)
		return nil, err
	}
	m.log.Info("endpoint created", "id", ep.ID, "container", ep.CNIAttachmentID(), "pod", ep.PodName())
	m.notify(func(s Subscriber) { s.EndpointCreated(ep) })
	return ep, nil
}

// RestoreEndpoint re-inserts an endpoint known before a restart, keeping
// its ID. It starts in state restoring.
func (m *EndpointManager) RestoreEndpoint(ep *tables.Endpoint) (*tables.Endpoint, error) {
	if !m.ids.reuse(ep.ID) {
		return nil, fmt.Errorf("restore endpoint %d: ID out of range or already in use", ep.ID)
	}
	ep = ep.Clone()
	ep.State = tables.StateRestoring
	ep.AddLog("ok", "endpoint restored after agent restart")
	if err := m.insertNew(ep); err != nil {
		m.ids.release(ep.ID)
		return nil, err
	}
	m.notify(func(s Subscriber) { s.EndpointCreated(ep) })
	return ep, nil
}

func (m *EndpointManager) insertNew(ep *tables.Endpoint) error {
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	if err := m.checkDuplicates(wtxn, ep); err != nil {
		return err
	}
	if _, _, err := m.endpoints.Insert(wtxn, ep); err != nil {
		return err
	}
	wtxn.Commit()
	m.persistNow()
	return nil
}

// CheckDuplicates reports the first existing endpoint that holds ep's ID,
// CNI attachment or one of its addresses.
func (m *EndpointManager) CheckDuplicates(ep *tables.Endpoint) error {
	return m.checkDuplicates(m.db.ReadTxn(), ep)
}

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
// row is removed (the datapath rows derived from it follow), its ID is freed.
func (m *EndpointManager) RemoveEndpoint(id uint16, why string) (*tables.Endpoint, error) {
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	ep, _, ok := m.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	ep = ep.Clone()
	_ = ep.SetState(tables.StateDisconnecting, why)
	_ = ep.SetState(tables.StateDisconnected, why)
	if _, _, err := m.endpoints.Delete(wtxn, ep); err != nil {
		return nil, err
	}
	wtxn.Commit()
	m.ids.release(id)
	m.persistNow()
	m.log.Info("endpoint deleted", "id", id, "container", ep.CNIAttachmentID(), "reason", why)
	m.notify(func(s Subscriber) { s.EndpointDeleted(ep) })
	return ep, nil
}

// Update applies fn to a clone of the current row of endpoint id and
// stores it, in one write transaction. fn may return an error to abort.
func (m *EndpointManager) Update(id uint16, fn func(ep *tables.Endpoint) error) (*tables.Endpoint, error) {
	wtxn := m.db.WriteTxn(m.endpoints)
	defer wtxn.Abort()
	ep, _, ok := m.endpoints.Get(wtxn, tables.EndpointIDIndex.Query(id))
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	ep = ep.Clone()
	if err := fn(ep); err != nil {
		return nil, err
	}
	if _, _, err := m.endpoints.Insert(wtxn, ep); err != nil {
		return nil, err
	}
	wtxn.Commit()
	return ep, nil
}

// Lookup finds an endpoint by any of the API's ID forms: a number,
// container-id:X, cni-attachment-id:CID:IFNAME, pod-name:NS/NAME,
// ipv4:IP or ipv6:IP.
func (m *EndpointManager) Lookup(txn statedb.ReadTxn, id string) (*tables.Endpoint, error) {
	q, err := ParseEndpointID(id)
	if err != nil {
		return nil, err
	}
	ep, _, ok := m.endpoints.Get(txn, q)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return ep, nil
}

// ParseEndpointID turns an API endpoint ID into a table query.
func ParseEndpointID(id string) (statedb.Query[*tables.Endpoint], error) {
	prefix, rest, hasPrefix := strings.Cut(id, ":")
	if !hasPrefix {
		n, err := strconv.ParseUint(id, 10, 16)
		if err != nil || n < MinEndpointID || n > MaxEndpointID {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want a number in %d..%d or a prefixed ID (container-id:, cni-attachment-id:, pod-name:, ipv4:, ipv6:)",
				ErrInvalidID, id, MinEndpointID, MaxEndpointID)
		}
		return tables.EndpointIDIndex.Query(uint16(n)), nil
	}
	if rest == "" {
		return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: empty value after %q", ErrInvalidID, id, prefix+":")
	}
	switch prefix {
	case "container-id":
		return tables.EndpointContainerIndex.Query(rest), nil
	case "cni-attachment-id":
		if !strings.Contains(rest, ":") {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want cni-attachment-id:CONTAINER-ID:IFNAME", ErrInvalidID, id)
		}
		return tables.EndpointCNIAttachmentIndex.Query(rest), nil
	case "pod-name":
		if !strings.Contains(rest, "/") {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want pod-name:NAMESPACE/NAME", ErrInvalidID, id)
		}
		return tables.EndpointPodIndex.Query(rest), nil
	case "ipv4", "ipv6":
		a, err := netip.ParseAddr(rest)
		if err != nil || (prefix == "ipv4") != a.Is4() {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: not an %s address", ErrInvalidID, id, prefix)
		}
		return tables.EndpointIPIndex.Query(a), nil
	}
	return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: unknown prefix %q", ErrInvalidID, id, prefix)
}

// WaitForState blocks until endpoint id reaches one of the states, is
// deleted, or ctx ends. It returns the row as last seen.
func (m *EndpointManager) WaitForState(ctx context.Context, id uint16, states ...tables.EndpointState) (*tables.Endpoint, error) {
	var last *tables.Endpoint
	for {
		ep, _, watch, ok := m.endpoints.GetWatch(m.db.ReadTxn(), tables.EndpointIDIndex.Query(id))
		if !ok {
			return last, fmt.Errorf("%w: %d was deleted while waiting", ErrNotFound, id)
		}
		last = ep
		for _, s := range states {
			if ep.State == s {
				return ep, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-watch:
		}
	}
}

func (m *EndpointManager) persistNow() {
	if m.persist != nil {
		m.persist()
	}
}

// Endpoints returns the endpoints table (read-only use).
func (m *EndpointManager) Endpoints() statedb.Table[*tables.Endpoint] { return m.endpoints }

// DB returns the database the endpoints live in.
func (m *EndpointManager) DB() *statedb.DB { return m.db }
