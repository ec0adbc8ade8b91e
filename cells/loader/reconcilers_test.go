package loader

import (
	"testing"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/statedb/tables"
)

// policyKeys only translates: each entry's keys with its verdict. A row
// whose entries ask one key for both verdicts is refused, not resolved
// (deny precedence is the policy engine's), but its keys are still known
// for deleting and pruning.
func TestPolicyKeysTranslates(t *testing.T) {
	key := func(id tables.NumericIdentity, proto uint8, port, end uint16) tables.PolicyKey {
		return tables.PolicyKey{Direction: maps.DirIngress, Identity: id, Protocol: proto, Port: port, EndPort: end}
	}
	row := &tables.EndpointPolicy{EndpointID: 7, Entries: []tables.PolicyEntry{
		{Key: key(256, maps.ProtoTCP, 80, 84)}, // 80-83, 84
		{Key: key(256, maps.ProtoTCP, 85, 85), Deny: true},
		{Key: key(0, maps.ProtoAny, 0, 0)},
	}}
	got, err := policyKeys(row)
	if err != nil {
		t.Fatal(err)
	}
	deny := maps.PolicyValue{Flags: maps.PolicyFlagDeny}
	want := map[string]maps.PolicyValue{
		"endpoint=7 ingress identity=256 proto=6 port=80-83": {},
		"endpoint=7 ingress identity=256 proto=6 port=84":    {},
		"endpoint=7 ingress identity=256 proto=6 port=85":    deny,
		"endpoint=7 ingress identity=0 proto=any port=any":   {},
	}
	if len(got) != len(want) {
		t.Errorf("%d keys, want %d: %v", len(got), len(want), got)
	}
	for k, v := range got {
		if w, ok := want[k.String()]; !ok || w != v {
			t.Errorf("key %s -> %+v; want %+v (present %v)", k, v, w, ok)
		}
	}

	row.Entries = append(row.Entries, tables.PolicyEntry{Key: key(256, maps.ProtoTCP, 84, 84), Deny: true})
	keys, err := policyKeys(row)
	if err == nil {
		t.Fatalf("entries asking key 84 for allow and deny accepted: %v", keys)
	}
	if len(keys) != len(want) {
		t.Errorf("refused row: %d keys, want %d for deleting and pruning", len(keys), len(want))
	}
}
