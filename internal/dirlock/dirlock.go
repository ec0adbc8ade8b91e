// Package dirlock gives a process exclusive use of a directory: an agent
// takes its state directory and its bpffs root with it at start, so a
// second agent started on the same paths (by mistake: a second unit, a
// test left running) refuses to start instead of handing the same IP to
// two pods and overwriting the first agent's files.
//
// The lock is flock(2) on the directory itself: it needs no file inside
// (bpffs holds only pins and directories), and the kernel drops it when
// the process dies, so a crash never leaves a stale lock behind.
package dirlock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock is a held lock; Unlock releases it.
type Lock struct{ f *os.File }

// ErrHeld is returned (wrapped) when another process holds the directory.
var ErrHeld = errors.New("directory in use")

// Acquire takes the lock on dir without waiting. When another process
// holds it the error is ErrHeld and names that process's PID if
// /proc/locks shows it; what says what the directory is to the user
// ("--state-dir").
func Acquire(dir, what string) (*Lock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return &Lock{f: f}, nil
	}
	defer f.Close()
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	holder := "another process"
	if pid := holderPID(f); pid > 0 {
		holder = fmt.Sprintf("another process (pid %d%s)", pid, commOf(pid))
	}
	return nil, fmt.Errorf("%s %s is used by %s: %w; stop it, or give this agent a %s of its own", what, dir, holder, ErrHeld, what)
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}

// holderPID finds the process holding a flock on f's inode in
// /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; the
// device is MAJOR:MINOR in hex, the inode in decimal). 0 if not found.
func holderPID(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer locks.Close()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != id {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			return pid
		}
	}
	return 0
}

// commOf is ", NAME" for a running process, "" if unknown.
func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return ", " + strings.TrimSpace(string(b))
}
