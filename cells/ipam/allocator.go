package ipam

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// IPAM hands out pod addresses from the configured CIDRs. The ipam table
// is the source of truth for what is allocated; IPAM is safe for
// concurrent use.
type IPAM struct {
	log   *slog.Logger
	db    *statedb.DB
	table statedb.RWTable[*tables.IPAMAllocation]
	dir   statedir.Dir
	v4    *pool // nil when --pod-cidr is empty
	v6    *pool // nil when --pod-cidr-v6 is empty
	now   func() time.Time
	// source gives the pools at start with --ipam=kubernetes (nil:
	// --ipam=local, the pools come from the flags).
	source PodCIDRSource

	// mu serializes every change: the table write, the state file write
	// and the cursors move together, so concurrent CNI ADDs neither get
	// the same address nor leave the file behind the table.
	mu       sync.Mutex
	ready    bool // allocations loaded; changes refused until then
	initDone func(statedb.WriteTxn)
	// restored are the allocations loaded at start, the only ones the
	// reclaimer may release (see reclaim.go).
	restored []*tables.IPAMAllocation
}

// Address is one allocated address with what a pod needs to use it.
type Address struct {
	IP      netip.Addr
	CIDR    netip.Prefix // the pod CIDR; its length is the pod's prefix length
	Gateway netip.Addr   // the router address
}

// Result of an allocation: one address per requested family.
type Result struct {
	IPv4 *Address
	IPv6 *Address
}

// newIPAM validates cfg and registers the table initializer. Call
// resolve and start before anything else; until then changes fail with
// ErrNotReady. With --ipam=kubernetes source gives the pod CIDRs.
func newIPAM(log *slog.Logger, db *statedb.DB, table statedb.RWTable[*tables.IPAMAllocation], dir statedir.Dir, cfg Config, source PodCIDRSource) (*IPAM, error) {
	if err := checkMode(cfg); err != nil {
		return nil, err
	}
	m := &IPAM{log: log, db: db, table: table, dir: dir, now: time.Now}
	if cfg.Kubernetes() {
		if source == nil {
			return nil, fmt.Errorf("IPAM: --%s=%s takes the pod CIDRs from this node's Node object: it needs Kubernetes mode (--k8s-kubeconfig, or running in a pod); without it use --%s=%s with --%s", flagIPAM, ModeKubernetes, flagIPAM, ModeLocal, flagPodCIDR)
		}
		m.source = source
	} else {
		var err error
		if m.v4, m.v6, err = parseConfig(cfg); err != nil {
			return nil, err
		}
	}
	wtxn := db.WriteTxn(table)
	m.initDone = table.RegisterInitializer(wtxn, "ipam-restore")
	wtxn.Commit()
	return m, nil
}

// resolve gets the pools from the source (--ipam=kubernetes), waiting as
// long as it does; with --ipam=local they are there already.
func (m *IPAM) resolve(ctx context.Context) error {
	if m.source == nil || len(m.pools()) > 0 {
		return nil
	}
	what, cidrs, err := m.source.PodCIDRs(ctx)
	if err != nil {
		return err
	}
	v4, v6, err := parseNodeCIDRs(what, cidrs)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.v4, m.v6 = v4, v6
	m.mu.Unlock()
	return nil
}

// start loads the persisted allocations and opens IPAM for business.
func (m *IPAM) start() (loaded, outside int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	loaded, outside, err = m.load()
	if err != nil {
		return 0, 0, err
	}
	m.restored = sortedRows(m.table.All(m.db.ReadTxn()))
	m.ready = true
	return loaded, outside, nil
}

func (m *IPAM) stop() {
	m.mu.Lock()
	m.ready = false
	m.mu.Unlock()
}

// Allocate hands out one address of each configured family (or only of
// family, if given) to owner (the CNI attachment "container-id:ifname")
// for pod ("namespace/name", may be empty). All or nothing: if any family
// fails, nothing is allocated. Errors: ErrExhausted, ErrInvalid,
// ErrFamilyNotConfigured, ErrNotReady, or a failure to save the state.
func (m *IPAM) Allocate(owner, pod string, family Family) (*Result, error) {
	if err := checkField("owner", owner); err != nil {
		return nil, err
	}
	if err := checkField("pod", pod); err != nil {
		return nil, err
	}
	pools, err := m.poolsFor(family)
	if err != nil {
		return nil, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return nil, fmt.Errorf("%w: allocations are still being restored, retry", ErrNotReady)
	}

	wtxn := m.db.WriteTxn(m.table)
	defer wtxn.Abort() // rolls back every family if one fails
	now := m.now()
	res := &Result{}
	cursors := m.cursors()
	for _, p := range pools {
		ip, _, err := p.allocate(wtxn, m.table)
		if err != nil {
			if res.IPv4 != nil {
				m.log.Warn("IPv6 allocation failed, IPv4 address not kept (allocations are all-or-nothing)",
					"ipv4", res.IPv4.IP, "owner", owner, "error", err)
			}
			return nil, err
		}
		row := &tables.IPAMAllocation{IP: ip, Owner: owner, Pod: pod, Created: now}
		if _, _, err := m.table.Insert(wtxn, row); err != nil {
			return nil, fmt.Errorf("recording allocation of %s: %w", ip, err)
		}
		addr := &Address{IP: ip, CIDR: p.cidr, Gateway: p.router}
		if p.family == IPv4 {
			res.IPv4 = addr
		} else {
			res.IPv6 = addr
		}
		cursors[p.family] = ip
	}
	if err := m.persist(wtxn, cursors); err != nil {
		return nil, fmt.Errorf("allocation not made: %w", err)
	}
	wtxn.Commit()
	for _, p := range pools {
		p.cursor = cursors[p.family]
	}
	attrs := []any{"owner", owner, "pod", pod}
	if res.IPv4 != nil {
		attrs = append(attrs, "ipv4", res.IPv4.IP)
	}
	if res.IPv6 != nil {
		attrs = append(attrs, "ipv6", res.IPv6.IP)
	}
	m.log.Info("Allocated pod address", attrs...)
	return res, nil
}

// Release frees ip. Errors: ErrNotAllocated (nobody holds it), ErrReserved
// (the router address), ErrInvalid (not a plain address). Addresses outside
// the current CIDRs that were restored from an earlier run are released
// like any other.
func (m *IPAM) Release(ip netip.Addr) (*tables.IPAMAllocation, error) {
	if !ip.IsValid() || ip.Zone() != "" {
		return nil, fmt.Errorf("%w: %q is not a plain IP address", ErrInvalid, ip)
	}
	ip = ip.Unmap()

	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return nil, fmt.Errorf("%w: allocations are still being restored, retry", ErrNotReady)
	}
	wtxn := m.db.WriteTxn(m.table)
	defer wtxn.Abort()
	a, _, found := m.table.Get(wtxn, tables.IPAMIPIndex.Query(ip))
	if !found {
		if p := m.poolOf(ip); p != nil && ip == p.router {
			return nil, fmt.Errorf("%w: %s is the router (gateway) address of %s; it is never allocated and cannot be released", ErrReserved, ip, p.cidr)
		}
		return nil, fmt.Errorf("%w: %s is not allocated (see `membrane ipam list`)", ErrNotAllocated, ip)
	}
	if _, _, err := m.table.Delete(wtxn, a); err != nil {
		return nil, fmt.Errorf("releasing %s: %w", ip, err)
	}
	if err := m.persist(wtxn, m.cursors()); err != nil {
		return nil, fmt.Errorf("%s not released: %w", ip, err)
	}
	wtxn.Commit()
	m.log.Info("Released pod address", "ip", ip, "owner", a.Owner, "pod", a.Pod)
	return a, nil
}

// ReleaseOwner frees every address of owner and returns what it freed
// (nothing, and no error, if owner holds none: a repeated CNI DEL is fine).
func (m *IPAM) ReleaseOwner(owner string) ([]*tables.IPAMAllocation, error) {
	if owner == "" {
		return nil, fmt.Errorf("%w: owner must not be empty", ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return nil, fmt.Errorf("%w: allocations are still being restored, retry", ErrNotReady)
	}
	wtxn := m.db.WriteTxn(m.table)
	defer wtxn.Abort()
	rows := sortedRows(m.table.List(wtxn, tables.IPAMOwnerIndex.Query(owner)))
	if len(rows) == 0 {
		return nil, nil
	}
	for _, a := range rows {
		if _, _, err := m.table.Delete(wtxn, a); err != nil {
			return nil, fmt.Errorf("releasing %s: %w", a.IP, err)
		}
	}
	if err := m.persist(wtxn, m.cursors()); err != nil {
		return nil, fmt.Errorf("addresses of %q not released: %w", owner, err)
	}
	wtxn.Commit()
	for _, a := range rows {
		m.log.Info("Released pod address", "ip", a.IP, "owner", a.Owner, "pod", a.Pod)
	}
	return rows, nil
}

// List returns the allocations sorted by IP; with owner set, only owner's.
func (m *IPAM) List(owner string) []*tables.IPAMAllocation {
	txn := m.db.ReadTxn()
	if owner != "" {
		return sortedRows(m.table.List(txn, tables.IPAMOwnerIndex.Query(owner)))
	}
	return sortedRows(m.table.All(txn))
}

// Router returns the router (gateway) address of family's CIDR; false if
// the family is not configured.
func (m *IPAM) Router(family Family) (netip.Addr, bool) {
	if p := m.pool(family); p != nil {
		return p.router, true
	}
	return netip.Addr{}, false
}

// CIDR returns family's pod CIDR; false if the family is not configured.
func (m *IPAM) CIDR(family Family) (netip.Prefix, bool) {
	if p := m.pool(family); p != nil {
		return p.cidr, true
	}
	return netip.Prefix{}, false
}

func (m *IPAM) pool(family Family) *pool {
	switch family {
	case IPv4:
		return m.v4
	case IPv6:
		return m.v6
	}
	return nil
}

// pools are the configured pools, IPv4 first.
func (m *IPAM) pools() []*pool {
	var ps []*pool
	for _, p := range []*pool{m.v4, m.v6} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

func (m *IPAM) poolsFor(family Family) ([]*pool, error) {
	switch family {
	case AnyFamily:
		return m.pools(), nil
	case IPv4, IPv6:
		if p := m.pool(family); p != nil {
			return []*pool{p}, nil
		}
		why := "--" + flagPodCIDR + " is empty"
		if family == IPv6 {
			why = "--" + flagPodCIDRV6 + " is empty"
		}
		if m.source != nil {
			why = "the Node object's spec.podCIDRs has none of this family"
		}
		return nil, fmt.Errorf("%w: no %s pod CIDR on this node (%s)", ErrFamilyNotConfigured, family, why)
	}
	_, err := ParseFamily(string(family))
	return nil, err
}

// poolOf is the pool whose CIDR contains ip, or nil.
func (m *IPAM) poolOf(ip netip.Addr) *pool {
	for _, p := range m.pools() {
		if p.cidr.Contains(ip) {
			return p
		}
	}
	return nil
}

func (m *IPAM) cursors() map[Family]netip.Addr {
	c := map[Family]netip.Addr{}
	for _, p := range m.pools() {
		if p.cursor.IsValid() {
			c[p.family] = p.cursor
		}
	}
	return c
}

func (m *IPAM) cidrs() []string {
	var s []string
	for _, p := range m.pools() {
		s = append(s, p.cidr.String())
	}
	return s
}

// maxFieldLen bounds owner and pod: a container ID plus an interface name,
// or a namespace and a pod name, fit with room to spare.
const maxFieldLen = 512

func checkField(name, v string) error {
	if len(v) > maxFieldLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", ErrInvalid, name, len(v), maxFieldLen)
	}
	if !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %s %q contains control characters or invalid UTF-8", ErrInvalid, name, v)
	}
	return nil
}

func sortedRows(seq iter.Seq2[*tables.IPAMAllocation, statedb.Revision]) []*tables.IPAMAllocation {
	rows := statedb.Collect(seq)
	slices.SortFunc(rows, func(a, b *tables.IPAMAllocation) int { return a.IP.Compare(b.IP) })
	return rows
}
