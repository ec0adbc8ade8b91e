package testutil

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/membrane-net/membrane/bpf"
)

// LoadDatapath loads the datapath's programs and maps without pinning
// anything, for BPF_PROG_RUN tests; it is closed when the test ends.
func LoadDatapath(t testing.TB) *ebpf.Collection {
	t.Helper()
	return LoadDatapathMode(t, false)
}

// LoadDatapathMode is LoadDatapath with eBPF host routing on or off
// (--host-routing=bpf or legacy).
func LoadDatapathMode(t testing.TB, hostRouting bool) *ebpf.Collection {
	t.Helper()
	RequirePrivileged(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := bpf.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if err := bpf.SetHostRouting(spec, hostRouting); err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("load datapath: %v", err)
	}
	t.Cleanup(coll.Close)
	return coll
}
