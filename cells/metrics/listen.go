package metrics

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/membrane-net/membrane/cells/apiserver"
)

// parseAddr splits --prometheus-serve-addr into a network and address:
// "unix:/path" or host:port with a host that is not a wildcard.
func parseAddr(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return "", "", fmt.Errorf("--prometheus-serve-addr %q: a unix socket needs an absolute path (unix:/run/membrane/metrics.sock)", addr)
		}
		return "unix", path, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("--prometheus-serve-addr %q: want host:port (127.0.0.1:9962) or unix:/path: %w", addr, err)
	}
	if host == "" {
		return "", "", fmt.Errorf("--prometheus-serve-addr %q: no host would listen on every address; name one: 127.0.0.1 (loopback) or the node's address", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return "", "", fmt.Errorf("--prometheus-serve-addr %q: %s is every address of the node; name one: 127.0.0.1 (loopback) or the node's address", addr, host)
	}
	return "tcp", addr, nil
}

// listen opens the metrics listener: a unix socket is made like the API
// socket (mode 0660).
func listen(addr string) (net.Listener, error) {
	network, address, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		ln, err := net.Listen("tcp", address)
		if err != nil {
			return nil, fmt.Errorf("metrics: listen on %s: %w (is another agent or exporter using the port?)", address, err)
		}
		return ln, nil
	}
	return apiserver.Listen(address, "metrics")
}
