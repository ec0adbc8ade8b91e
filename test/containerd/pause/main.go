// pause is the sandbox image's only binary, the suite's stand-in for
// registry.k8s.io/pause (no registry is reachable from CI): it holds the
// pod's namespaces open, reaps the zombies of a shared PID namespace, and
// exits on SIGINT or SIGTERM. The suite builds it with CGO_ENABLED=0, so
// the image needs no libc.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
