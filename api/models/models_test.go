package models_test

import (
	"go/build"
	"strings"
	"testing"
)

// TestStandardLibraryOnly: the models import nothing but the standard
// library, so linking them (membrane-cni does) brings in nothing else: no
// statedb, no hive, no cell.
func TestStandardLibraryOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("api/models imports %s: keep it to the standard library", imp)
		}
	}
}
