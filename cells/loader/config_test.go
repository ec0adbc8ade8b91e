package loader

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/internal/testutil"
)

// A mistyped mode is refused before anything is loaded, with the choices.
func TestConfigModesRefused(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{DatapathMode: "tcp", HostRouting: HostRoutingLegacy}, "want auto, tcx or tc"},
		{Config{DatapathMode: ModeTC, HostRouting: "ebpf"}, "want auto, bpf or legacy"},
	} {
		_, err := newDatapath(nil, slog.Default(), nil, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
}

// auto is bpf on a kernel with bpf_redirect_peer (5.10+, which the CI
// machines run), and an explicit mode is kept.
func TestResolveHostRouting(t *testing.T) {
	testutil.RequirePrivileged(t) // probing loads a program
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	wantAuto := HostRoutingLegacy
	if major > 5 || major == 5 && minor >= 10 {
		wantAuto = HostRoutingBPF
	}
	for mode, want := range map[string]string{HostRoutingAuto: wantAuto, HostRoutingLegacy: HostRoutingLegacy} {
		if got, err := resolveHostRouting(mode); err != nil || got != want {
			t.Errorf("--host-routing=%s on Linux %d.%d: %q, %v; want %q", mode, major, minor, got, err, want)
		}
	}
	got, err := resolveHostRouting(HostRoutingBPF)
	if wantAuto == HostRoutingBPF && (err != nil || got != HostRoutingBPF) {
		t.Errorf("--host-routing=bpf: %q, %v", got, err)
	}
	if wantAuto == HostRoutingLegacy && err == nil {
		t.Errorf("--host-routing=bpf on Linux %d.%d without bpf_redirect_peer: no error", major, minor)
	}
}
