package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// resolveHostRouting is the host routing the datapath runs with for
// --host-routing=mode: auto is bpf where the kernel has bpf_redirect_peer
// and legacy elsewhere; bpf on a kernel without it is an error that says
// so, where loading the programs would fail on an unknown helper.
func resolveHostRouting(mode string) (string, error) {
	if mode == HostRoutingLegacy {
		return mode, nil
	}
	err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectPeer)
	switch {
	case err == nil:
		return HostRoutingBPF, nil
	case mode == HostRoutingAuto:
		return HostRoutingLegacy, nil
	default:
		return "", fmt.Errorf("--host-routing=bpf needs bpf_redirect_peer (Linux 5.10 or later): %w; use --host-routing=legacy or auto", err)
	}
}
