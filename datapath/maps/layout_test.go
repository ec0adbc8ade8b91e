package maps

import (
	"encoding/binary"
	"testing"

	"github.com/membrane-net/membrane/bpf"
)

// TestLayoutsMatchC keeps the Go mirrors of the map layouts in step with
// the compiled C: a field added on one side only fails here.
func TestLayoutsMatchC(t *testing.T) {
	spec, err := bpf.Spec()
	if err != nil {
		t.Fatal(err)
	}
	for name, kv := range map[string][2]any{
		IPCacheMapName:   {IPCacheKey{}, IPCacheValue{}},
		EndpointsMapName: {EndpointKey{}, EndpointValue{}},
		PolicyMapName:    {PolicyKey{}, PolicyValue{}},
		ConntrackMapName: {ConntrackKey{}, ConntrackValue{}},
		MetricsMapName:   {MetricsKey{}, MetricsValue{}},
		FragmentsMapName: {FragmentKey{}, FragmentValue{}},
	} {
		m := spec.Maps[name]
		if m == nil {
			t.Fatalf("map %s not in the object", name)
		}
		if got := binary.Size(kv[0]); uint32(got) != m.KeySize {
			t.Errorf("%s key: Go %d bytes, C %d", name, got, m.KeySize)
		}
		if got := binary.Size(kv[1]); uint32(got) != m.ValueSize {
			t.Errorf("%s value: Go %d bytes, C %d", name, got, m.ValueSize)
		}
	}
	if binary.Size(Event{}) != 64 {
		t.Errorf("event is %d bytes, C struct event is 64", binary.Size(Event{}))
	}
}

func TestPolicyKeysCoverRangeExactly(t *testing.T) {
	for _, r := range [][2]uint16{{80, 80}, {1, 65535}, {8000, 8080}, {0, 0}, {1024, 2047}, {65535, 65535}, {3, 17}} {
		keys := PolicyKeys(1, 0, 7, 6, r[0], r[1])
		if r == [2]uint16{0, 0} {
			if len(keys) != 1 || keys[0].PrefixLen != PolicyPrefixProto {
				t.Fatalf("all ports: %v", keys)
			}
			continue
		}
		covered := map[uint32]int{}
		for _, k := range keys {
			plen := k.PrefixLen - PolicyPrefixPort
			lo := uint32(k.Port())
			for p := lo; p < lo+1<<(16-plen); p++ {
				covered[p]++
			}
		}
		for p := uint32(0); p <= 65535; p++ {
			in := p >= uint32(r[0]) && p <= uint32(r[1])
			if in && covered[p] != 1 || !in && covered[p] != 0 {
				t.Fatalf("range %v: port %d covered %d times", r, p, covered[p])
			}
		}
	}
	if n := len(PolicyKeys(1, 0, 7, 6, 1, 65535)); n != 16 {
		t.Errorf("1-65535 took %d prefixes, want 16", n)
	}
	if k := PolicyKeys(1, 0, 7, 0, 80, 80); len(k) != 1 || k[0].PrefixLen != PolicyPrefixStatic {
		t.Errorf("any protocol must be one key ignoring ports: %v", k)
	}
}

func TestPolicyKeyPorts(t *testing.T) {
	for _, r := range [][2]uint16{{80, 80}, {1, 65535}, {8000, 8080}, {0, 65535}, {65535, 65535}} {
		var lo, hi []uint16
		for _, k := range PolicyKeys(1, DirEgress, 7, ProtoUDP, r[0], r[1]) {
			l, h := k.Ports()
			lo, hi = append(lo, l), append(hi, h)
		}
		if lo[0] != r[0] || hi[len(hi)-1] != r[1] {
			t.Errorf("range %v: keys cover %d..%d", r, lo[0], hi[len(hi)-1])
		}
		for i := 1; i < len(lo); i++ {
			if uint32(hi[i-1])+1 != uint32(lo[i]) {
				t.Errorf("range %v: keys %d and %d are not adjacent: %v-%v", r, i-1, i, lo, hi)
			}
		}
	}
	for _, k := range []PolicyKey{PolicyKeys(1, DirIngress, 0, ProtoAny, 0, 0)[0], PolicyKeys(1, DirIngress, 0, ProtoTCP, 0, 0)[0]} {
		if lo, hi := k.Ports(); lo != 0 || hi != 0xffff {
			t.Errorf("%v: ports %d-%d, want all", k, lo, hi)
		}
	}
	k := PolicyKeys(3, DirEgress, 9, ProtoTCP, 8000, 8063)[0]
	if got, want := k.String(), "endpoint=3 egress identity=9 proto=6 port=8000-8063"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
