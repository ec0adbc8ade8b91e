// Package maps defines the layout of Membrane's pinned BPF maps: their specs,
// keys and values, shared by the agent (which creates, pins and writes them
// through the statedb reconciler), the datapath programs (which read them;
// the C structs in bpf/ mirror these) and the debug CLI (which opens the
// pins directly, so it works while the agent is down).
//
// One file per map holds its layout (ipcache.go, endpoints.go, policy.go,
// conntrack.go, fragments.go, metrics.go, events.go); names.go names the numbers they
// carry (directions, protocols, reasons); this file what they share.
//
// Layouts are fixed-size, host byte order except where the field is an
// address (network order, as the packet carries it).
package maps

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/bpf"
)

// Names of the pinned maps under the bpffs directory (--bpf-root).
const (
	IPCacheMapName   = "mb_ipcache"
	EndpointsMapName = "mb_endpoints"
	PolicyMapName    = "mb_policy"
	ConntrackMapName = "mb_conntrack"
	MetricsMapName   = "mb_metrics"
	EventsMapName    = "mb_events"
	FragmentsMapName = "mb_fragments"
)

// Address families in keys.
const (
	FamilyIPv4 = 4
	FamilyIPv6 = 6
)

// Addr reads an address field of a key or event of the given family (IPv4
// in the first 4 bytes); the zero Addr for any other family.
func Addr(family uint8, b [16]byte) netip.Addr {
	switch family {
	case FamilyIPv4:
		return netip.AddrFrom4([4]byte(b[:4]))
	case FamilyIPv6:
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// Spec returns the spec of a map as compiled into the datapath object
// (bpf/maps.h is the single definition; pinned by name under --bpf-root).
func Spec(name string) (*ebpf.MapSpec, error) {
	spec, err := objectSpec()
	if err != nil {
		return nil, err
	}
	m, ok := spec.Maps[name]
	if !ok {
		return nil, fmt.Errorf("map %s is not in the datapath object", name)
	}
	return m.Copy(), nil
}

var objectSpec = sync.OnceValues(bpf.Spec)

func mustSpec(name string) *ebpf.MapSpec {
	m, err := Spec(name)
	if err != nil {
		panic(err) // the object is embedded: this is a build defect
	}
	return m
}

// OpenPinned opens a map another process pinned under root, read-only.
func OpenPinned(root, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(root, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w (is the agent running with --bpf-root=%s?)",
			filepath.Join(root, name), err, root)
	}
	return m, nil
}
