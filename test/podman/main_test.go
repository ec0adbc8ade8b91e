package podman

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bins are the binaries under test and the image tarball, made once by
// TestMain.
var bins struct {
	dir    string
	agent  string
	cniDir string // podman's cni_plugin_dirs: membrane-cni alone
	cli    string
	// image is a tarball of a busybox-static root filesystem, for
	// `podman import`.
	image string
	// errs holds why something is missing; tests needing it fail with it.
	errs map[string]error
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		// Every test skips (or, with MEMBRANE_REQUIRE_PRIVILEGED=1,
		// fails) on its own: no need to build anything.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "membrane-podman-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildAll(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildAll(dir string) {
	bins.dir = dir
	bins.cniDir = filepath.Join(dir, "cni")
	bins.errs = map[string]error{}
	root, err := moduleRoot()
	if err != nil {
		bins.errs["all"] = err
		return
	}
	build := func(name, pkg, outDir string) string {
		out := filepath.Join(outDir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			bins.errs[name] = fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
			return ""
		}
		return out
	}
	bins.agent = build("membrane-agent", "./cmd/membrane-agent", dir)
	build("membrane-cni", "./plugins/membrane-cni", bins.cniDir)
	bins.cli = build("membrane", "./cmd/membrane", dir)
	bins.image = filepath.Join(dir, "busybox-rootfs.tar")
	if err := writeBusyboxRootfs(bins.image); err != nil {
		bins.errs["image"] = err
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := string(bytes.TrimSpace(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(gomod), nil
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
	if err := bins.errs["all"]; err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"membrane-agent", "membrane-cni", "membrane", "image"} {
		if err := bins.errs[n]; err != nil {
			t.Fatalf("%s is needed but could not be made: %v", n, err)
		}
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
