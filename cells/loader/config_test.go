package loader

import (
	"log/slog"
	"strings"
	"testing"
)

// A mistyped mode is refused before anything is loaded, with the choices.
func TestConfigModesRefused(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{DatapathMode: "tcp", HostRouting: HostRoutingLegacy}, "want auto, tcx or tc"},
		{Config{DatapathMode: ModeTC, HostRouting: "ebpf"}, "want legacy or bpf"},
	} {
		_, err := newDatapath(nil, slog.Default(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
}
