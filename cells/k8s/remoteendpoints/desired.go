package remoteendpoints

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/statedb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// claimOf reads a CEP. A CEP without an identity yet, or with an
// address that does not parse, is an error naming it: it claims nothing.
func claimOf(cep *v2.CiliumEndpoint) (claim, error) {
	c := claim{Key: cep.Namespace + "/" + cep.Name, Created: cep.CreationTimestamp.Time}
	if cep.Status.Identity == nil || cep.Status.Identity.ID <= 0 || cep.Status.Identity.ID > 0xffffffff {
		return c, fmt.Errorf("CiliumEndpoint %s has no valid identity", c.Key)
	}
	c.Identity = tables.NumericIdentity(cep.Status.Identity.ID)
	if cep.Status.Networking == nil {
		return c, nil
	}
	c.Node = cep.Status.Networking.NodeIP
	for _, p := range prefixesOf(cep) {
		if !p.IsValid() {
			return claim{Key: c.Key}, fmt.Errorf("CiliumEndpoint %s has an address that is not an IP", c.Key)
		}
		c.Prefixes = append(c.Prefixes, p)
	}
	return c, nil
}

// prefixesOf lists the host prefixes of a CEP's addresses, an invalid
// prefix for an address that does not parse.
func prefixesOf(cep *v2.CiliumEndpoint) []netip.Prefix {
	if cep.Status.Networking == nil {
		return nil
	}
	var out []netip.Prefix
	for _, pair := range cep.Status.Networking.Addressing {
		for _, s := range []string{pair.IPv4, pair.IPv6} {
			if s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				out = append(out, netip.Prefix{})
				continue
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
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

// slim is the informer's transform: it keeps only what the ipcache
// needs (name, creation time, identity number, addresses, node), so a
// remote endpoint costs the agent a few hundred bytes, not the whole
// object (labels of the identity, policy, managed fields).
func slim(obj any) (any, error) {
	cep, ok := obj.(*v2.CiliumEndpoint)
	if !ok {
		return obj, nil
	}
	out := &v2.CiliumEndpoint{ObjectMeta: metav1.ObjectMeta{
		Name: cep.Name, Namespace: cep.Namespace, ResourceVersion: cep.ResourceVersion, CreationTimestamp: cep.CreationTimestamp,
	}}
	if id := cep.Status.Identity; id != nil {
		out.Status.Identity = &v2.EndpointIdentity{ID: id.ID}
	}
	if n := cep.Status.Networking; n != nil {
		out.Status.Networking = &v2.EndpointNetworking{Addressing: n.Addressing, NodeIP: n.NodeIP}
	}
	return out, nil
}

// validPrefixes lists the host prefixes of a CEP's addresses that parse.
func validPrefixes(cep *v2.CiliumEndpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixesOf(cep) {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// claimants maps each address to the keys of the cached CEPs that claim
// it, kept from the informer's events. A map of its own costs about 100
// bytes per address; an index of the informer's cache costs about 300
// (a set per indexed value).
type claimants map[netip.Prefix][]string

// move records that the CEP key claims the prefixes to instead of from.
func (c claimants) move(key string, from, to []netip.Prefix) {
	for _, p := range from {
		if slices.Contains(to, p) {
			continue
		}
		keys := slices.DeleteFunc(slices.Clone(c[p]), func(k string) bool { return k == key })
		if len(keys) == 0 {
			delete(c, p)
		} else {
			c[p] = keys
		}
	}
	for _, p := range to {
		if !slices.Contains(c[p], key) {
			c[p] = append(slices.Clip(c[p]), key)
		}
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
