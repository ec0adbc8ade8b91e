package bench

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/internal/benchchart"
)

// profilePrograms measures what the eBPF programs of each Membrane mode
// cost: more sockperf runs per mode (rounds of them, the order rotating)
// with the kernel's BPF run time statistics on, reading the run count and
// total run time of the programs attached to the mode's host veths before
// and after each; the medians are kept. The statistics take two clock
// reads per program run, so they stay off during the measured rounds. It
// says where a round trip's time goes: the programs' part against the
// whole.
func profilePrograms(b *testing.B, pairs []*podPair, idx []int, res *benchchart.Datapath, cpu string, rounds int) {
	b.Helper()
	type profiled struct {
		pp          *podPair
		mode        *benchchart.Mode
		progs       []*ebpf.Program
		ns, perTran []float64
	}
	var ps []*profiled
	for k, pp := range pairs {
		if len(pp.hostIfindexes) == 0 {
			continue
		}
		progs, err := attachedPrograms(pp.hostIfindexes)
		if err != nil {
			b.Fatalf("%s: %v", pp.mode, err)
		}
		defer closeAll(progs)
		ps = append(ps, &profiled{pp: pp, mode: &res.Modes[idx[k]], progs: progs})
	}
	if len(ps) == 0 {
		return
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enabling BPF run time statistics: %v", err)
	}
	defer stats.Close()
	for r := range rounds {
		for _, i := range rotate(len(ps), r) {
			p := ps[i]
			before, err := programTotals(p.progs)
			if err != nil {
				b.Fatalf("%s: %v", p.pp.mode, err)
			}
			rr, err := sockperf(p.pp, cpu, secs)
			if err != nil {
				b.Fatal(err)
			}
			after, err := programTotals(p.progs)
			if err != nil {
				b.Fatalf("%s: %v", p.pp.mode, err)
			}
			runs := float64(after.RunCount - before.RunCount)
			if runs == 0 || rr.messages == 0 {
				b.Fatalf("%s: the programs on the host veths did not run (%v runs, %v messages)", p.pp.mode, runs, rr.messages)
			}
			p.ns = append(p.ns, float64(after.Runtime-before.Runtime)/runs)
			p.perTran = append(p.perTran, runs/rr.messages)
		}
	}
	for _, p := range ps {
		p.mode.Programs = &benchchart.Programs{NsPerRun: median(p.ns), RunsPerTrans: median(p.perTran), NsPerRunRounds: p.ns}
	}
}

// attachedPrograms opens the programs attached to the interfaces in
// either direction, each once: as clsact filters (--datapath-mode=tc) or
// tcx links.
func attachedPrograms(ifindexes []int) ([]*ebpf.Program, error) {
	ids := map[ebpf.ProgramID]bool{}
	for _, ifindex := range ifindexes {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return nil, fmt.Errorf("interface %d: %w", ifindex, err)
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, err := netlink.FilterList(l, parent)
			if err != nil {
				return nil, fmt.Errorf("tc filters of %s: %w", l.Attrs().Name, err)
			}
			for _, f := range filters {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Id > 0 {
					ids[ebpf.ProgramID(bf.Id)] = true
				}
			}
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			q, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				continue // a kernel without tcx: the filters are all there is
			}
			for _, p := range q.Programs {
				ids[p.ID] = true
			}
		}
	}
	if len(ids) == 0 {
		return nil, errors.New("no program attached to the host veths")
	}
	var progs []*ebpf.Program
	for id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			closeAll(progs)
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		progs = append(progs, p)
	}
	return progs, nil
}

// programTotals is the programs' run count and run time, summed.
func programTotals(progs []*ebpf.Program) (ebpf.ProgramStats, error) {
	var sum ebpf.ProgramStats
	for _, p := range progs {
		s, err := p.Stats()
		if err != nil {
			return sum, err
		}
		sum.RunCount += s.RunCount
		sum.Runtime += s.Runtime
	}
	return sum, nil
}

func closeAll(progs []*ebpf.Program) {
	for _, p := range progs {
		p.Close()
	}
}

// programsLine is a mode's program cost in the results table.
func programsLine(p benchchart.Programs, rttUs float64) string {
	share := "-"
	if rttUs > 0 {
		share = fmt.Sprintf("%.0f %%", 100*p.UsPerTrans()/rttUs)
	}
	return fmt.Sprintf("%.0f ns per run (rounds: %s), %.2f runs per transaction: %.2f µs per round trip (%s of its p50)",
		p.NsPerRun, fmtRuns(p.NsPerRunRounds, "%.0f"), p.RunsPerTrans, p.UsPerTrans(), share)
}
