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

// Maps are the datapath's pinned maps.
type Maps struct {
	IPCache   *ebpf.Map
	Endpoints *ebpf.Map
	Policy    *ebpf.Map
	Conntrack *ebpf.Map
	Metrics   *ebpf.Map
	Events    *ebpf.Map
	Fragments *ebpf.Map

	all map[string]*ebpf.Map
}

// openOrCreate opens the map pinned under root by the spec's name or
// creates and pins it. A pinned map of another layout (left by an older
// agent) is replaced: its contents are derived state the reconcilers
// rewrite from the tables.
func openOrCreate(log *slog.Logger, root string, spec *ebpf.MapSpec) (*ebpf.Map, error) {
	spec = spec.Copy()
	spec.Pinning = ebpf.PinByName
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

// openMaps opens or creates every pinned map of the datapath object (not
// its constants, .rodata: each load has its own).
func openMaps(log *slog.Logger, root string, spec *ebpf.CollectionSpec) (*Maps, error) {
	m := &Maps{all: map[string]*ebpf.Map{}}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		mp, err := openOrCreate(log, root, ms)
		if err != nil {
			m.close()
			return nil, err
		}
		m.all[name] = mp
	}
	m.IPCache = m.all[maps.IPCacheMapName]
	m.Endpoints = m.all[maps.EndpointsMapName]
	m.Policy = m.all[maps.PolicyMapName]
	m.Conntrack = m.all[maps.ConntrackMapName]
	m.Metrics = m.all[maps.MetricsMapName]
	m.Events = m.all[maps.EventsMapName]
	m.Fragments = m.all[maps.FragmentsMapName]
	return m, nil
}

func (m *Maps) close() {
	for _, mp := range m.all {
		mp.Close()
	}
}

// Programs are the loaded datapath programs.
type Programs struct {
	FromContainer *ebpf.Program
	ToContainer   *ebpf.Program
}

// loadPrograms loads the programs once, bound to the pinned maps, and pins
// them under root/progs for inspection (bpftool prog show pinned ...).
func loadPrograms(root string, spec *ebpf.CollectionSpec, m *Maps) (*Programs, error) {
	spec = spec.Copy()
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: m.all})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load datapath programs: %+v", ve)
		}
		return nil, fmt.Errorf("load datapath programs: %w", err)
	}
	p := &Programs{
		FromContainer: coll.DetachProgram("from_container"),
		ToContainer:   coll.DetachProgram("to_container"),
	}
	coll.Close()
	dir := filepath.Join(root, "progs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.close()
		return nil, err
	}
	for name, prog := range map[string]*ebpf.Program{"from_container": p.FromContainer, "to_container": p.ToContainer} {
		pin := filepath.Join(dir, name)
		os.Remove(pin) // the previous run's program: links now move to this one
		if err := prog.Pin(pin); err != nil {
			p.close()
			return nil, fmt.Errorf("pin program %s: %w", name, err)
		}
	}
	return p, nil
}

func (p *Programs) close() {
	for _, prog := range []*ebpf.Program{p.FromContainer, p.ToContainer} {
		if prog != nil {
			prog.Close()
		}
	}
}

// Datapath bundles what the loader holds once started.
type Datapath struct {
	Maps     *Maps
	Programs *Programs
	Attacher Attacher
}

// EventsMap and MetricsMap make the Datapath the maps.EventMaps the
// monitor reads: nil until the maps are open.
func (dp *Datapath) EventsMap() *ebpf.Map {
	if dp.Maps == nil {
		return nil
	}
	return dp.Maps.Events
}

func (dp *Datapath) MetricsMap() *ebpf.Map {
	if dp.Maps == nil {
		return nil
	}
	return dp.Maps.Metrics
}
