// Package bpf holds the datapath's C sources and the objects compiled from
// them (by clang, through bpf2go; `make bpf` regenerates, CI checks they
// are fresh), so building Membrane needs no C toolchain.
package bpf

//go:generate go tool bpf2go -cc clang -no-global-types -target bpfel -output-stem membrane membrane membrane.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu

import "github.com/cilium/ebpf"

// Spec returns the compiled datapath: the programs from_container and
// to_container and the maps they use (all pinned by name).
func Spec() (*ebpf.CollectionSpec, error) { return loadMembrane() }
