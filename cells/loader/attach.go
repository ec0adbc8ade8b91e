package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attacher puts the two programs on an endpoint's host-side veth and
// takes them off again. Attaching is idempotent: on an interface that has
// them already (a restart) the programs are swapped atomically for the
// ones this agent loaded.
type Attacher interface {
	Attach(ifindex int) error
	Detach(ifindex int) error
	// Attached lists the interfaces the attacher has state for.
	Attached() ([]int, error)
	Mode() string
}

// Datapath modes (--datapath-mode).
const (
	ModeAuto = "auto"
	ModeTCX  = "tcx"
	ModeTC   = "tc"
)

// tcxAttacher uses tcx links (Linux 6.6+), pinned under root/links so they
// outlive the agent.
type tcxAttacher struct {
	dir   string
	progs *Programs
}

func (a *tcxAttacher) Mode() string { return ModeTCX }

func (a *tcxAttacher) pin(ifindex int, dir string) string {
	return filepath.Join(a.dir, fmt.Sprintf("%d-%s", ifindex, dir))
}

func (a *tcxAttacher) Attach(ifindex int) error {
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return err
	}
	for _, at := range []struct {
		dir  string
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		// Write the egress side (ingress policy) first: once the pod can
		// send, what answers it is already judged.
		{"egress", a.progs.ToContainer, ebpf.AttachTCXEgress},
		{"ingress", a.progs.FromContainer, ebpf.AttachTCXIngress},
	} {
		pin := a.pin(ifindex, at.dir)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			err = l.Update(at.prog)
			l.Close()
			if err == nil {
				continue
			}
			// The link is stale (its interface is gone and a new one has
			// the same index): replace it.
			os.Remove(pin)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: at.prog, Attach: at.typ})
		if err != nil {
			return fmt.Errorf("attach tcx %s to ifindex %d: %w", at.dir, ifindex, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin tcx link %s: %w", pin, err)
		}
	}
	return nil
}

func (a *tcxAttacher) Detach(ifindex int) error {
	var errs []error
	for _, dir := range []string{"ingress", "egress"} {
		pin := a.pin(ifindex, dir)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			// Unpinning and closing the last reference detaches it.
			errs = append(errs, l.Unpin())
			l.Close()
			continue
		}
		errs = append(errs, os.Remove(pin))
	}
	return errors.Join(errs...)
}

func (a *tcxAttacher) Attached() ([]int, error) { return pinnedIfindexes(a.dir) }

func pinnedIfindexes(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	for _, e := range ents {
		idx, _, _ := strings.Cut(e.Name(), "-")
		if n, err := strconv.Atoi(idx); err == nil && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// tcAttacher uses the legacy clsact qdisc with direct-action filters, for
// kernels without tcx. Filters live in the kernel with the interface; the
// agent keeps no pins for them.
type tcAttacher struct {
	progs *Programs
	// known records the interfaces attached by this run, for pruning.
	known map[int]bool
}

func (a *tcAttacher) Mode() string { return ModeTC }

func (a *tcAttacher) Attach(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	for _, f := range []struct {
		parent uint32
		prog   *ebpf.Program
		name   string
	}{
		{netlink.HANDLE_MIN_EGRESS, a.progs.ToContainer, "mb_to_container"},
		{netlink.HANDLE_MIN_INGRESS, a.progs.FromContainer, "mb_from_container"},
	} {
		filter := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex, Parent: f.parent, Handle: netlink.MakeHandle(0, 1),
				Protocol: unix.ETH_P_ALL, Priority: 1,
			},
			Fd: f.prog.FD(), Name: f.name, DirectAction: true,
		}
		if err := netlink.FilterReplace(filter); err != nil {
			return fmt.Errorf("tc filter %s on ifindex %d: %w", f.name, ifindex, err)
		}
	}
	a.known[ifindex] = true
	return nil
}

func (a *tcAttacher) Detach(ifindex int) error {
	delete(a.known, ifindex)
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	err := netlink.QdiscDel(qdisc)
	if err != nil && (errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL)) {
		return nil // interface or qdisc already gone
	}
	return err
}

func (a *tcAttacher) Attached() ([]int, error) {
	out := make([]int, 0, len(a.known))
	for idx := range a.known {
		out = append(out, idx)
	}
	return out, nil
}

// probeTCX reports whether the kernel has tcx links (Linux 6.6+).
func probeTCX() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	fmt.Sscanf(rel, "%d.%d", &major, &minor)
	return major > 6 || major == 6 && minor >= 6
}
