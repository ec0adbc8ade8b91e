package remoteendpoints

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/statedb"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/statedb/tables"
)

// Source marks the ipcache rows this cell owns.
const Source = "remote"

// claim is what one remote CiliumEndpoint says of its addresses.
type claim struct {
	Key      string // namespace/name
	Node     string
	Created  time.Time
	Identity tables.NumericIdentity
	Prefixes []netip.Prefix // one host prefix per address
}

// claimOf reads a CEP's record. A CEP without an identity yet, or with
// an address that does not parse, is an error naming it: it claims
// nothing.
func claimOf(r *record) (claim, error) {
	c := claim{Key: r.key, Created: time.Unix(r.created, 0)}
	if r.identity == 0 {
		return c, fmt.Errorf("CiliumEndpoint %s has no valid identity", c.Key)
	}
	if r.badAddress {
		return claim{Key: c.Key}, fmt.Errorf("CiliumEndpoint %s has an address that is not an IP", c.Key)
	}
	c.Identity = tables.NumericIdentity(r.identity)
	c.Node = r.nodeName()
	c.Prefixes = r.prefixes()
	return c, nil
}

// winner picks, among the remote claims on one address, the one the
// ipcache says: the newest CEP (a pod that took over an address whose
// earlier pod's CEP is not deleted yet), then the smallest key, so every
// agent picks the same.
func winner(claims []claim) (claim, bool) {
	if len(claims) == 0 {
		return claim{}, false
	}
	best := claims[0]
	for _, c := range claims[1:] {
		if c.Created.After(best.Created) || (c.Created.Equal(best.Created) && cmp.Less(c.Key, best.Key)) {
			best = c
		}
	}
	return best, true
}

// overridable reports whether a remote row may replace a row of the
// given source. Local rows win: the node's own endpoints ("endpoint"),
// its addresses ("host") and any other source this node knows first
// hand. A CIDR identity that a policy rule allocated for a pod's
// address ("cidr-policy") gives way to the pod's identity, as in
// Cilium, where a pod's IP is judged by the pod's identity.
func overridable(source string) bool {
	return source == Source || source == "cidr-policy"
}

// action is what to do with one prefix's ipcache row.
type action int

const (
	keep     action = iota // the row already says it, or a local row wins
	write                  // insert the remote row
	remove                 // delete our stale row
	conflict               // a local row holds an address a remote CEP claims
)

// decide compares the row the table has for a prefix (nil if none) with
// the remote claim that wins it (ok false if none).
func decide(have *tables.IPCacheEntry, want claim, ok bool) action {
	switch {
	case have != nil && !overridable(have.Source):
		if ok {
			return conflict
		}
		return keep
	case !ok:
		if have != nil && have.Source == Source {
			return remove
		}
		return keep
	case have != nil && have.Source == Source && have.Identity == want.Identity:
		return keep
	}
	return write
}

// slim is the informer's transform: it keeps a record of what the
// ipcache needs (name, creation time, identity number, addresses, node),
// so a remote endpoint costs the agent about a hundred bytes in the
// cache, not the whole object (labels of the identity, policy, managed
// fields) nor even an ObjectMeta.
func slim(obj any) (any, error) {
	if cep, ok := obj.(*v2.CiliumEndpoint); ok {
		return newRecord(cep), nil
	}
	return obj, nil
}

// claimants maps each address to the keys of the cached CEPs that claim
// it, kept from the informer's events. Nearly every address has one
// claimant, kept in one: a key shares the record's bytes, so an address
// costs its map entry, about 60 bytes. The addresses several CEPs claim
// (a pod's address taken over before the old CEP went) are in more. An
// index of the informer's cache cost about 300 bytes per address (a set
// per indexed value), a map of slices about 145.
type claimants struct {
	one  map[netip.Prefix]string
	more map[netip.Prefix][]string
}

func newClaimants() *claimants {
	return &claimants{one: map[netip.Prefix]string{}, more: map[netip.Prefix][]string{}}
}

// keys returns the keys of the CEPs claiming p (a copy).
func (c *claimants) keys(p netip.Prefix) []string {
	if ks, ok := c.more[p]; ok {
		return slices.Clone(ks)
	}
	if k, ok := c.one[p]; ok {
		return []string{k}
	}
	return nil
}

// move records that the CEP key claims the prefixes to instead of from.
func (c *claimants) move(key string, from, to []netip.Prefix) {
	for _, p := range from {
		if !slices.Contains(to, p) {
			c.remove(p, key)
		}
	}
	for _, p := range to {
		c.add(p, key)
	}
}

func (c *claimants) add(p netip.Prefix, key string) {
	if ks, ok := c.more[p]; ok {
		if !slices.Contains(ks, key) {
			c.more[p] = append(ks, key)
		}
		return
	}
	if k, ok := c.one[p]; ok && k != key {
		delete(c.one, p)
		c.more[p] = []string{k, key}
		return
	}
	c.one[p] = key
}

func (c *claimants) remove(p netip.Prefix, key string) {
	ks, ok := c.more[p]
	if !ok {
		if c.one[p] == key {
			delete(c.one, p)
		}
		return
	}
	ks = slices.DeleteFunc(slices.Clone(ks), func(k string) bool { return k == key })
	if len(ks) > 1 {
		c.more[p] = ks
		return
	}
	delete(c.more, p)
	if len(ks) == 1 {
		c.one[p] = ks[0]
	}
}

// nodeSet holds the names and addresses of the cluster's nodes, as a
// CEP's status.networking.node names its node (Membrane writes the
// node's name, Cilium its address). nil: the nodes are not listed yet,
// and every node counts.
type nodeSet map[string]bool

// has reports whether a CEP naming node counts: a node of the set, or
// any node while the set is not known, or a CEP that names no node.
func (s nodeSet) has(node string) bool {
	return s == nil || node == "" || s[node]
}

// readNodes is the nodes table's set (nil until the table is
// initialized) and a channel that closes when that may change.
func readNodes(txn statedb.ReadTxn, nodes statedb.Table[*tables.Node]) (nodeSet, <-chan struct{}) {
	if ok, initCh := nodes.Initialized(txn); !ok {
		return nil, initCh
	}
	rows, changed := nodes.AllWatch(txn)
	s := nodeSet{}
	for n := range rows {
		s[n.Name] = true
		for _, a := range n.Addresses() {
			s[a.String()] = true
		}
	}
	return s, changed
}
