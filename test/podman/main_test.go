package podman

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// bins are the binaries under test, built once by TestMain; membrane-cni
// alone is in bins.PluginDir, podman's cni_plugin_dirs.
var bins *e2eutil.Binaries

// image is a tarball of a busybox-static root filesystem, for `podman
// import`, made once by TestMain; err says why it is missing.
var image struct {
	path string
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(e2eutil.RunSuite(m, "membrane-podman-bin", func(dir string) {
		bins = e2eutil.Build(dir, filepath.Join(dir, "cni"), e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CLIBin)
		image.path = filepath.Join(dir, "busybox-rootfs.tar")
		image.err = writeBusyboxRootfs(image.path)
	}))
}

// busyboxPath is where Debian's busybox-static puts its binary.
const busyboxPath = "/bin/busybox"

// writeBusyboxRootfs writes a root filesystem tarball: the static busybox
// as /bin/busybox, a link to it for each of its applets (sh, sleep, ping,
// nc, ip, ...) and the directories a runtime mounts over.
func writeBusyboxRootfs(path string) error {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("the image is made from busybox-static (apt-get install busybox-static): %w", err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bb)); err != nil {
		return fmt.Errorf("%s: %w", busyboxPath, err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				return fmt.Errorf("%s is dynamically linked, it cannot run alone in a container: apt-get install busybox-static", busyboxPath)
			}
		}
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", busyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"proc", 0o555}, {"root", 0o700}, {"sys", 0o555}, {"tmp", 0o1777}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name + "/", Mode: d.mode}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))}); err != nil {
		return err
	}
	if _, err := tw.Write(bb); err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// needBinaries fails the test if something it needs is missing.
func needBinaries(t *testing.T) {
	t.Helper()
	bins.Need(t, e2eutil.AgentBin, e2eutil.PluginBin, e2eutil.CLIBin)
	if image.err != nil {
		t.Fatalf("image is needed but could not be made: %v", image.err)
	}
	var missing []string
	for _, tool := range []string{"podman", "runc", "conmon", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatal(errors.New("not installed: " + strings.Join(missing, ", ") +
			" (make deps installs podman, runc, catatonit and busybox-static)"))
	}
}
