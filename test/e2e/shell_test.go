package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/internal/e2eutil"
)

// The agent's live statedb shell, through `membrane shell`: db/watch
// prints the row of a pod added with cnitool as it appears, db/show and
// the index queries find it, the shell refuses to write, and its socket
// has the API socket's rights.
func TestShell(t *testing.T) {
	setup(t)
	bins.Need(t, e2eutil.CLIBin)
	a := startAgent(t, agentOpts{})
	n := newNetwork(t, a, "", nil)

	api, err := os.Stat(a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := os.Stat(client.ShellSocket(a.Socket))
	if err != nil {
		t.Fatalf("the agent's shell socket: %v", err)
	}
	as, ss := api.Sys().(*syscall.Stat_t), sh.Sys().(*syscall.Stat_t)
	if api.Mode() != sh.Mode() || as.Uid != ss.Uid || as.Gid != ss.Gid {
		t.Errorf("shell socket %v %d:%d, API socket %v %d:%d: want the same rights",
			sh.Mode(), ss.Uid, ss.Gid, api.Mode(), as.Uid, as.Gid)
	}

	// db/watch as the operator runs it: a process printing rows as they
	// change, stopped by a signal.
	watch := exec.Command(bins.CLI, "--socket", a.Socket, "shell", "--", "db/watch", "endpoints")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	watch.Stderr = &stderr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		watch.Process.Kill()
		watch.Wait()
	})
	waitLine := func(what string, match func(string) bool) string {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("membrane shell -- db/watch ended before %s: %s", what, stderr.String())
				}
				if match(l) {
					return l
				}
			case <-deadline:
				t.Fatalf("membrane shell -- db/watch printed no %s within 30s: %s", what, stderr.String())
			}
		}
	}
	waitLine("header", func(l string) bool { return strings.HasPrefix(l, "ID") && strings.Contains(l, "State") })

	a.putPod("shop", "web", map[string]string{"app": "web"})
	p := newPod(t, "shop", "web")
	if err := n.add(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.del(p) })
	ip := p.IP().String()
	row := waitLine("row of the new pod", func(l string) bool { return strings.Contains(l, "shop/web") && strings.Contains(l, ip) })
	t.Logf("db/watch: %s", row)

	run := func(args ...string) (string, error) {
		t.Helper()
		c := exec.Command(bins.CLI, append([]string{"--socket", a.Socket, "--timeout", "30s", "shell", "--"}, args...)...)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		done := make(chan error, 1)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				return out.String(), errors.New(strings.TrimSpace(errb.String()))
			}
			return out.String(), nil
		case <-time.After(60 * time.Second):
			c.Process.Kill()
			<-done
			t.Fatalf("membrane shell -- %s did not end within 60s", strings.Join(args, " "))
			return "", nil
		}
	}
	expect := func(want string, args ...string) {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Errorf("membrane shell -- %s: %v", strings.Join(args, " "), err)
		} else if !strings.Contains(out, want) {
			t.Errorf("membrane shell -- %s: no %q in:\n%s", strings.Join(args, " "), want, out)
		}
	}
	expect(ip, "db/show", "endpoints")
	expect("shop/web", "db/get", "-i", "ip", "endpoints", ip)
	expect(ip, "db/list", "-i", "pod-name", "endpoints", "shop/web")
	expect(`"ipv4"`, "db/show", "-f", "json", "endpoints")
	expect("endpoints", "db")
	expect("level=", "health")
	expect("db/watch", "help")

	if out, err := run("db/get", "-i", "ip", "endpoints", "10.255.255.254"); err != nil || strings.Contains(out, "shop/web") {
		t.Errorf("db/get of an address no endpoint holds: %v:\n%s", err, out)
	}
	if _, err := run("db/show", "no-such-table"); err == nil {
		t.Error("db/show of a missing table succeeded")
	}
	if _, err := run("db/list", "--delete", "endpoints", "1"); err == nil || !strings.Contains(err.Error(), "only reads") {
		t.Errorf("db/list --delete: %v, want refused", err)
	}
	if _, err := run("db/delete", "endpoints", "x"); err == nil {
		t.Error("db/delete was not refused")
	}
	expect(ip, "db/show", "endpoints") // still there

	// A session fed on stdin (not a terminal): one command a line.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bins.CLI, "--socket", a.Socket, "shell")
	c.Stdin = strings.NewReader("db/get -i ip endpoints " + ip + "\nexit\n")
	c.WaitDelay = 5 * time.Second
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "shop/web") {
		t.Errorf("membrane shell with commands on stdin: %v:\n%s", err, out)
	}
}
