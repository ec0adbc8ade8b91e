// Package bpf holds the datapath's C sources and the objects compiled from
// them (by clang, through bpf2go; `make bpf` regenerates, CI checks they
// are fresh), so building Membrane needs no C toolchain.
package bpf

//go:generate go tool bpf2go -cc clang -no-global-types -target bpfel -output-stem membrane membrane membrane.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Spec returns the compiled datapath: the programs from_container and
// to_container, the maps they use (all pinned by name) and the constant
// SetHostRouting sets.
func Spec() (*ebpf.CollectionSpec, error) { return loadMembrane() }

// SetHostRouting sets the datapath's host routing mode in spec, before it
// is loaded: on is eBPF host routing (--host-routing=bpf), off the legacy
// routing by the host stack. A constant of the object, so the verifier
// removes the code of the mode not taken.
func SetHostRouting(spec *ebpf.CollectionSpec, on bool) error {
	v, ok := spec.Variables[membraneVarHostRouting]
	if !ok {
		return fmt.Errorf("datapath object has no variable %s", membraneVarHostRouting)
	}
	var val uint32
	if on {
		val = 1
	}
	return v.Set(val)
}
