package ipam

import (
	"encoding/binary"
	"math"
	"net/netip"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/statedb/tables"
)

// pool is the address arithmetic of one family's pod CIDR. It holds no
// allocations (those live in the ipam table), only where the next search
// starts.
//
// Layout of a range, e.g. 10.200.0.0/24:
//
//	10.200.0.0    network address        never handed out
//	10.200.0.1    router (pods' gateway) never handed out
//	10.200.0.2    first pod address
//	  ...
//	10.200.0.254  last pod address
//	10.200.0.255  broadcast              never handed out
//
// IPv6 has no broadcast, so the last address is a pod address; the first
// (the subnet-router anycast address, RFC 4291) is still never handed out.
type pool struct {
	family Family
	origin string // where the range came from ("--pod-cidr"), for messages
	cidr   netip.Prefix
	router netip.Addr
	first  netip.Addr // lowest address that may be handed out
	last   netip.Addr // highest address that may be handed out
	usable uint64     // how many may be handed out (saturates at MaxUint64)

	// cursor is the address handed out last (invalid: none yet). The
	// search for a free address starts after it; see allocate.
	cursor netip.Addr
}

func newPool(fam Family, origin string, cidr netip.Prefix) *pool {
	network := cidr.Addr()
	p := &pool{
		family: fam,
		origin: origin,
		cidr:   cidr,
		router: network.Next(),
		first:  network.Next().Next(),
		last:   lastAddr(cidr),
	}
	hostBits := network.BitLen() - cidr.Bits()
	reserved := uint64(2) // network (or anycast) + router
	if fam == IPv4 {
		p.last = p.last.Prev() // broadcast
		reserved = 3
	}
	if hostBits >= 64 {
		p.usable = math.MaxUint64
	} else {
		p.usable = uint64(1)<<hostBits - reserved
	}
	return p
}

// lastAddr is the highest address of cidr.
func lastAddr(cidr netip.Prefix) netip.Addr {
	if cidr.Addr().Is4() {
		b := cidr.Addr().As4()
		v := binary.BigEndian.Uint32(b[:]) | (math.MaxUint32 >> cidr.Bits())
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := cidr.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if n := cidr.Bits(); n < 64 {
		hi |= math.MaxUint64 >> n
		lo = math.MaxUint64
	} else {
		lo |= math.MaxUint64 >> (n - 64)
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// handsOut reports whether ip is one the pool may hand out: inside the
// CIDR and not the network, router or broadcast address.
func (p *pool) handsOut(ip netip.Addr) bool {
	return ip.Is4() == p.cidr.Addr().Is4() && ip.Compare(p.first) >= 0 && ip.Compare(p.last) <= 0
}

// next is the candidate after ip, wrapping from the top of the range to
// the bottom.
func (p *pool) next(ip netip.Addr) netip.Addr {
	n := ip.Next()
	if !n.IsValid() || !p.handsOut(n) {
		return p.first
	}
	return n
}

// inUse counts the rows of tbl at addresses this pool hands out. Rows at
// the router, network or broadcast address (left by an earlier, different
// CIDR) take no usable slot and are not counted.
func (p *pool) inUse(txn statedb.ReadTxn, tbl statedb.Table[*tables.IPAMAllocation]) uint64 {
	var n uint64
	for a := range tbl.LowerBound(txn, tables.IPAMIPIndex.Query(p.first)) {
		if !p.handsOut(a.IP) {
			break
		}
		n++
	}
	return n
}

// allocate finds a free address in the pool as seen by txn. It does not
// move the cursor: the caller does that once the allocation is committed,
// so a failed (rolled back) allocation leaves the pool as it was.
//
// The search starts after the address handed out last instead of at the
// bottom of the range, so an address just released is the last one to be
// handed out again. A released address can still be referenced elsewhere
// for a while: conntrack entries and neighbour caches of other pods, a
// remote node's ipcache that has not caught up yet, a retried CNI DEL
// naming the old owner. Handing it straight to a new pod would let that
// pod receive the old one's traffic under the old one's identity.
func (p *pool) allocate(txn statedb.ReadTxn, tbl statedb.Table[*tables.IPAMAllocation]) (netip.Addr, uint64, error) {
	used := p.inUse(txn, tbl)
	if used >= p.usable {
		return netip.Addr{}, used, p.exhausted(used)
	}
	cand := p.cursor
	if !cand.IsValid() || !p.handsOut(cand) {
		cand = p.router // so that the first candidate is p.first
	}
	// The first used+1 candidates are distinct (used < usable) and at
	// most used of them are taken, so one of them is free.
	for i := uint64(0); i <= used; i++ {
		cand = p.next(cand)
		if _, _, found := tbl.Get(txn, tables.IPAMIPIndex.Query(cand)); !found {
			return cand, used, nil
		}
	}
	return netip.Addr{}, used, p.exhausted(used)
}
