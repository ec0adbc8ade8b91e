package policy

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
	datapath "github.com/membrane-net/membrane/datapath/maps"
	policyapi "github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

func TestEntrySetCarving(t *testing.T) {
	pp := func(proto uint8, lo, hi uint16) portProto { return portProto{proto: proto, lo: lo, hi: hi} }
	s := newEntrySet()
	s.add(datapath.DirIngress, 256, pp(6, 0, 65535), false, "a")
	s.add(datapath.DirIngress, 256, pp(6, 80, 80), true, "b")
	s.add(datapath.DirIngress, 256, pp(6, 1, 79), true, "c") // together with b: only 0 and 81.. remain
	s.add(datapath.DirIngress, 256, pp(6, 443, 443), false, "d")
	s.add(datapath.DirIngress, 257, pp(17, 53, 53), false, "e")
	s.add(datapath.DirIngress, 257, pp(0, 0, 65535), true, "f") // covers every allow of 257
	s.add(datapath.DirEgress, 0, pp(6, 10, 20), true, "g")
	s.add(datapath.DirEgress, 256, pp(6, 15, 15), false, "h") // other identity: stays
	got := s.entries()
	// Port 0 alone cannot be written (it would read as every port): it is dropped.
	expectEntries(t, got,
		"in 256 tcp 1-79 deny", "in 256 tcp 80 deny", "in 256 tcp 81-65535",
		"in 257 any deny",
		"eg 0 tcp 10-20 deny", "eg 256 tcp 15")
	// An allow covered by another keeps the broader one's rules: they
	// alone decide the packets (443 lies inside a's 81-65535).
	for _, e := range got {
		if e.Key.Identity == 256 && !e.Deny && e.Key.Direction == datapath.DirIngress && (len(e.RuleKeys) != 1 || e.RuleKeys[0] != "a") {
			t.Errorf("rule keys of %s: %v", formatEntry(e), e.RuleKeys)
		}
	}
}

// datapathKeys expands entries into policy map keys -> deny, as the
// loader does; an error if two entries ask one key for different verdicts
// (the loader would refuse the row).
func datapathKeys(ep uint16, entries []tables.PolicyEntry) (map[maps.PolicyKey]bool, error) {
	keys := map[maps.PolicyKey]bool{}
	for _, e := range entries {
		for _, k := range maps.PolicyKeys(ep, e.Key.Direction, e.Key.Identity, e.Key.Protocol, e.Key.Port, e.Key.EndPort) {
			if deny, ok := keys[k]; ok && deny != e.Deny {
				return nil, fmt.Errorf("key %s is asked for both allow and deny: entries %q", k, keysOf(entries))
			}
			keys[k] = e.Deny
		}
	}
	return keys, nil
}

// lpmVerdict is what the datapath decides for a packet, computed the way
// the loader writes entries (each one's keys from datapath/maps.PolicyKeys,
// with its verdict: the loader resolves nothing, so no key may be asked
// for both) and the BPF program looks them up (longest prefix match under
// the peer's identity and under 0; a deny in either wins).
func lpmVerdict(t testing.TB, p *identityPolicy, dir uint8, peer tables.NumericIdentity, proto uint8, port uint16) string {
	t.Helper()
	enforced := p.ingressEnforced
	if dir == datapath.DirEgress {
		enforced = p.egressEnforced
	}
	if !enforced {
		return VerdictAllowed
	}
	keys, err := datapathKeys(1, p.entries)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(id tables.NumericIdentity) (found, deny bool) {
		best := -1
		for k, d := range keys {
			if k.Direction != dir || k.Identity != id {
				continue
			}
			l := int(k.PrefixLen)
			if l >= maps.PolicyPrefixProto && k.Protocol != proto {
				continue
			}
			if l > maps.PolicyPrefixPort {
				bits := l - maps.PolicyPrefixPort
				mask := uint16(0xffff) << (16 - bits)
				if k.Port()&mask != port&mask {
					continue
				}
			}
			if l > best {
				best, deny = l, d
			}
		}
		return best >= 0, deny
	}
	f1, d1 := lookup(peer)
	f2, d2 := lookup(0)
	switch {
	case d1 || d2:
		return VerdictDenied
	case f1 || f2:
		return VerdictAllowed
	}
	return VerdictDenied
}

// The verdict a trace explains (any matching deny wins, then any allow)
// is the verdict of the datapath's longest-prefix lookups, for random
// mixes of allows and denies: what the entry set's cutting guarantees.
func TestEntriesMatchDatapathLookup(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cfg := Config{EnablePolicy: EnforcementDefault, AllowLocalhost: AllowLocalhostPolicy}
	protos := []string{"", "TCP", "UDP", "ANY"}
	randPorts := func() []policyapi.PortRule {
		if rng.IntN(4) == 0 {
			return nil
		}
		var pr policyapi.PortRule
		for range 1 + rng.IntN(2) {
			lo := rng.IntN(17)
			pp := policyapi.PortProtocol{Port: strconv.Itoa(lo), Protocol: protos[rng.IntN(len(protos))]}
			if lo > 0 && rng.IntN(2) == 0 {
				pp.EndPort = int32(lo + rng.IntN(8))
			}
			pr.Ports = append(pr.Ports, pp)
		}
		return []policyapi.PortRule{pr}
	}
	randPeers := func() ([]policyapi.EndpointSelector, []policyapi.Entity) {
		switch rng.IntN(4) {
		case 0:
			return nil, []policyapi.Entity{policyapi.EntityAll}
		case 1:
			return []policyapi.EndpointSelector{esel("app", "db")}, nil
		case 2:
			return []policyapi.EndpointSelector{{}}, nil
		}
		return nil, []policyapi.Entity{policyapi.EntityHost}
	}
	for iter := range 300 {
		var rules []*tables.PolicyRule
		for i := range 1 + rng.IntN(4) {
			r := policyapi.Rule{EndpointSelector: sel("app", "web")}
			for range rng.IntN(3) {
				eps, ents := randPeers()
				r.Ingress = append(r.Ingress, policyapi.IngressRule{FromEndpoints: eps, FromEntities: ents, ToPorts: randPorts()})
			}
			for range rng.IntN(3) {
				eps, ents := randPeers()
				r.IngressDeny = append(r.IngressDeny, policyapi.IngressDenyRule{FromEndpoints: eps, FromEntities: ents, ToPorts: randPorts()})
			}
			rules = append(rules, rule(strconv.Itoa(iter)+"/"+strconv.Itoa(i), 1, r))
		}
		p := compute(cfg, webLabels, nil, rules...)
		for _, peer := range []tables.NumericIdentity{1, 256, 257, 258} {
			for _, proto := range []uint8{datapath.ProtoTCP, datapath.ProtoUDP, datapath.ProtoICMP} {
				for port := range uint16(26) {
					st, _ := evaluate(cfg, p, datapath.DirIngress, peer, proto, port)
					if want := lpmVerdict(t, p, datapath.DirIngress, peer, proto, port); st.Verdict != want {
						t.Fatalf("peer %d proto %d port %d: trace says %s, datapath %s\nentries: %q\nrules: %+v",
							peer, proto, port, st.Verdict, want, keysOf(p.entries), rules)
					}
				}
			}
		}
	}
}
