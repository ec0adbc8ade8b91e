package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/testutil"
)

// A second agent started on the state dir or the bpffs root of a running
// one refuses to start, naming the holder, instead of handing out the
// same IPs and overwriting its files or pinned maps; the first agent
// keeps serving.
func TestSecondAgentOnSameDirsRefuses(t *testing.T) {
	setup(t)
	a := startAgent(t, agentOpts{})
	dir := t.TempDir()
	for _, tc := range []struct {
		name, want string
		args       func(t *testing.T) []string
	}{
		{"state-dir", "--state-dir " + a.StateDir + " is used by another process (pid ",
			func(t *testing.T) []string {
				return []string{"--state-dir", a.StateDir, "--bpf-root", testutil.BPFDir(t)}
			}},
		{"bpf-root", "--bpf-root " + a.BPFRoot + " is used by another process (pid ",
			func(*testing.T) []string {
				return []string{"--state-dir", filepath.Join(dir, "state"), "--bpf-root", a.BPFRoot}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"--socket", filepath.Join(dir, tc.name+".sock"), "--pod-cidr", a.PodCIDR.String()}, tc.args(t)...)
			out, err := exec.CommandContext(ctx, bins.Agent, args...).CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("second agent: %v (timeout: %v), want a refusal to start\n%s", err, ctx.Err(), out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("second agent's output does not say %q:\n%s", tc.want, out)
			}
		})
	}
	if _, err := a.Client.Healthz(ctxT(t)); err != nil {
		t.Errorf("the first agent stopped answering: %v", err)
	}
}
