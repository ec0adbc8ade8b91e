package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndCopy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub") // created on demand
	p := filepath.Join(dir, "f.json")
	for _, content := range []string{"one", "two, longer"} {
		if err := WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	dst := filepath.Join(t.TempDir(), "bin", "plugin")
	if err := CopyFile(p, dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "two, longer" {
		t.Fatalf("copy has %q", got)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want just the file", len(ents))
	}
	if err := CopyFile(filepath.Join(dir, "missing"), dst, 0o755); err == nil {
		t.Fatal("copying a missing file succeeded")
	}
}
