package cniconfig

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakePlugin writes a shell script that answers CNI_COMMAND=VERSION with
// the given supported versions.
func fakePlugin(t *testing.T, versions string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "membrane-cni")
	script := "#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] || exit 1\ncat >/dev/null\n" +
		`echo '{"cniVersion":"1.1.0","supportedVersions":[` + versions + `]}'` + "\n"
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInstallPlugin(t *testing.T) {
	src := fakePlugin(t, `"0.4.0","1.0.0","1.1.0"`)
	binDir := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	dst, err := InstallPlugin(context.Background(), src, binDir)
	if err != nil {
		t.Fatal(err)
	}
	if dst != filepath.Join(binDir, "membrane-cni") {
		t.Errorf("installed as %s", dst)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("installed mode %v, want 0755", st.Mode().Perm())
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Error("installed file differs from the source")
	}

	// Reinstalling replaces the file (a new inode: whoever runs the old
	// binary keeps it) and leaves no temporary file behind.
	before, _ := os.Stat(dst)
	if _, err := InstallPlugin(context.Background(), src, binDir); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(dst)
	if os.SameFile(before, after) {
		t.Error("reinstall wrote into the old file instead of replacing it")
	}
	if entries, _ := os.ReadDir(binDir); len(entries) != 1 {
		t.Errorf("bin dir holds %d entries, want 1", len(entries))
	}
}

func TestInstallPluginRefusesSomethingElse(t *testing.T) {
	binDir := t.TempDir()
	if _, err := InstallPlugin(context.Background(), filepath.Join(t.TempDir(), "missing"), binDir); err == nil {
		t.Error("installed a missing file")
	}
	_, err := InstallPlugin(context.Background(), fakePlugin(t, `"0.3.1","0.4.0","1.0.0"`), binDir)
	if err == nil || !strings.Contains(err.Error(), "does not support CNI 1.1.0") {
		t.Errorf("a plugin without CNI 1.1.0: %v", err)
	}
}
