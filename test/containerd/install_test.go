package containerd

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// TestMakeInstallAndUninstall stages `make install` into a DESTDIR with
// non-default locations, checks what landed where (the unit pointing at
// the installed agent and conflist), then `make uninstall` with the same
// variables and checks that no file is left, the conflist the agent would
// have written included.
func TestMakeInstallAndUninstall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs make install: skipped with -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "root")
	vars := []string{
		"DESTDIR=" + dest,
		"PREFIX=/opt/membrane",
		"CNI_BIN_DIR=/usr/libexec/cni",
		"CNI_CONF=/etc/cni/net.d/07-membrane.conflist",
	}
	make := func(target string) {
		t.Helper()
		// BIN: build into the test's directory, not the checkout's bin/.
		cmd := exec.Command("make", append([]string{"-C", root, target, "BIN=" + filepath.Join(tmp, "bin")}, vars...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, e2eutil.LastLines(string(out), 20))
		}
	}

	make("install")
	want := map[string]fs.FileMode{
		"opt/membrane/bin/membrane-agent":           0o755,
		"opt/membrane/bin/membrane-cni":             0o755,
		"opt/membrane/bin/membrane":                 0o755,
		"usr/libexec/cni/membrane-cni":              0o755,
		"etc/systemd/system/membrane-agent.service": 0o644,
	}
	for rel, mode := range want {
		st, err := os.Stat(filepath.Join(dest, rel))
		if err != nil {
			t.Errorf("make install did not install %s: %v", rel, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", rel, st.Mode().Perm(), mode)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/membrane-agent.service"))
	for _, s := range []string{
		"ExecStart=/opt/membrane/bin/membrane-agent",
		"--write-cni-conf-when-ready /etc/cni/net.d/07-membrane.conflist",
		"Restart=on-failure",
	} {
		if !strings.Contains(string(unit), s) {
			t.Errorf("the installed unit lacks %q:\n%s", s, unit)
		}
	}
	if files := filesUnder(t, dest); len(files) != len(want) {
		t.Errorf("make install installed %v, want exactly %d files", files, len(want))
	}

	// What the agent writes once it runs; uninstall removes it too.
	conflist := filepath.Join(dest, "etc/cni/net.d/07-membrane.conflist")
	os.MkdirAll(filepath.Dir(conflist), 0o755)
	if err := os.WriteFile(conflist, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	make("uninstall")
	if files := filesUnder(t, dest); len(files) != 0 {
		t.Errorf("make uninstall left %v", files)
	}
}

func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return nil
	})
	return files
}
