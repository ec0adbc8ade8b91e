package dirlock

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Two holders of one directory: the second is refused with the first's
// PID; once released, the directory can be taken again. (flock locks
// belong to open file descriptions, so one process can play both.)
func TestAcquireIsExclusive(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "--state-dir")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "--state-dir")
	if !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire: %v, want ErrHeld", err)
	}
	for _, want := range []string{"--state-dir " + dir, fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(dir, "--state-dir")
	if err != nil {
		t.Fatalf("Acquire after Unlock: %v", err)
	}
	again.Unlock()
	if err := again.Unlock(); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
}

func TestAcquireMissingDir(t *testing.T) {
	if _, err := Acquire(t.TempDir()+"/none", "--bpf-root"); err == nil || errors.Is(err, ErrHeld) {
		t.Fatalf("Acquire of a missing directory: %v", err)
	}
}
