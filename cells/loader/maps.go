package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/membrane-net/membrane/datapath/maps"
)

// Maps are the agent's pinned BPF maps.
type Maps struct {
	IPCache   *ebpf.Map
	Endpoints *ebpf.Map
}

// openOrCreate opens the map pinned under root by the spec's name or
// creates and pins it. A pinned map of another layout (left by an older
// agent) is replaced: its contents are derived state the reconcilers
// rewrite from the tables.
func openOrCreate(log *slog.Logger, root string, spec *ebpf.MapSpec) (*ebpf.Map, error) {
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: root})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		pin := filepath.Join(root, spec.Name)
		log.Warn("replacing pinned map of another layout", "pin", pin, "error", err)
		if rerr := os.Remove(pin); rerr != nil {
			return nil, fmt.Errorf("remove incompatible pinned map %s: %w", pin, rerr)
		}
		m, err = ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: root})
	}
	if err != nil {
		return nil, fmt.Errorf("map %s under %s: %w", spec.Name, root, err)
	}
	return m, nil
}

func (m *Maps) open(log *slog.Logger, root string) error {
	var err error
	if m.IPCache, err = openOrCreate(log, root, maps.IPCacheSpec()); err != nil {
		return err
	}
	if m.Endpoints, err = openOrCreate(log, root, maps.EndpointsSpec()); err != nil {
		return err
	}
	return nil
}

func (m *Maps) close() {
	for _, mp := range []*ebpf.Map{m.IPCache, m.Endpoints} {
		if mp != nil {
			mp.Close()
		}
	}
}
