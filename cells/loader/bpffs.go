package loader

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const bpffsMagic = 0xcafe4a11

// ensureBPFFS makes sure root lives on a bpffs, mounting one at
// /sys/fs/bpf if nothing is mounted there (a fresh machine), and creates
// root.
func ensureBPFFS(root string) error {
	if !isBPFFS(nearestExisting(root)) {
		const mnt = "/sys/fs/bpf"
		if !isBPFFS(mnt) {
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", mnt, err)
			}
			if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
				return fmt.Errorf("mount bpffs at %s: %w (mount it yourself: mount -t bpf bpf %s)", mnt, err, mnt)
			}
		}
		if !isBPFFS(nearestExisting(root)) {
			return fmt.Errorf("--bpf-root %s is not on a bpf filesystem (use a directory under /sys/fs/bpf)", root)
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create --bpf-root %s: %w", root, err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == bpffsMagic
}

func nearestExisting(path string) string {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == "/" {
			return p
		}
	}
}
