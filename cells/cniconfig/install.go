package cniconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/membrane-net/membrane/internal/atomicfile"
)

// PluginName is the plugin's file name in the CNI bin dir: the "type" of
// its conflist entry.
const PluginName = "membrane-cni"

// DefaultBinDir is where runtimes look for CNI plugins by default.
const DefaultBinDir = "/opt/cni/bin"

// InstallPlugin copies the plugin binary src into binDir (created if
// missing) as membrane-cni, atomically, and then runs the installed copy
// the way a runtime would (CNI_COMMAND=VERSION) to prove it executes here.
// It returns the installed path.
func InstallPlugin(ctx context.Context, src, binDir string) (string, error) {
	st, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("plugin binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("plugin binary %s is not a regular file", src)
	}
	dst := filepath.Join(binDir, PluginName)
	if err := atomicfile.CopyFile(src, dst, 0o755); err != nil {
		return "", fmt.Errorf("installing %s as %s: %w", src, dst, err)
	}
	if err := checkPlugin(ctx, dst); err != nil {
		return dst, err
	}
	return dst, nil
}

// checkPlugin runs `CNI_COMMAND=VERSION plugin` and expects a version
// answer that includes every version the conflist names.
func checkPlugin(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion":"` + CNIVersion + `"}`))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installed plugin %s does not run (CNI_COMMAND=VERSION): %w: %s", path, err, bytes.TrimSpace(errb.Bytes()))
	}
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		return fmt.Errorf("installed plugin %s answered VERSION with %q: %w", path, out.String(), err)
	}
	for _, want := range CNIVersions {
		if !slices.Contains(v.SupportedVersions, want) {
			return fmt.Errorf("installed plugin %s does not support CNI %s (it supports %v): is it membrane-cni?", path, want, v.SupportedVersions)
		}
	}
	return nil
}
