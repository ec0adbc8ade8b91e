// Package testutil holds what Membrane's tests share: the privileged-test
// gate, scratch bpffs directories and crafted packets for BPF_PROG_RUN.
package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// RequirePrivileged skips a test that needs root (netns, veth, BPF) when
// not root, unless MEMBRANE_REQUIRE_PRIVILEGED=1 (set by CI), where the
// skip would hide a broken suite and therefore fails the test.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	SkipOrFail(t, "needs root (network namespaces, veths, BPF); run the suite as root")
}

// SkipOrFail skips a test that cannot run here for the reason msg (no
// root, a tool not installed), or fails it when MEMBRANE_REQUIRE_PRIVILEGED=1
// (set by CI), where the skip would hide a broken suite.
func SkipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("MEMBRANE_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal(msg + " (MEMBRANE_REQUIRE_PRIVILEGED=1)")
	}
	t.Skip(msg)
}

// BPFDir returns a fresh directory on bpffs (mounted at /sys/fs/bpf if
// needed), removed with everything pinned in it when the test ends.
func BPFDir(t testing.TB) string {
	t.Helper()
	RequirePrivileged(t)
	const mnt = "/sys/fs/bpf"
	var st unix.Statfs_t
	if unix.Statfs(mnt, &st) != nil || uint32(st.Type) != 0xcafe4a11 {
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
			t.Fatalf("mount bpffs: %v", err)
		}
	}
	dir := filepath.Join(mnt, fmt.Sprintf("membrane-test-%d-%s", os.Getpid(), sanitize(t.Name())))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}
