package e2e

import (
	"net"
	"testing"

	"github.com/membrane-net/membrane/internal/e2eutil"
)

// Traffic for the policy suites comes from this test binary itself,
// re-executed inside a pod's netns (`ip netns exec NS TESTBINARY`) as the
// traffic tools of e2eutil: a server that answers TCP and UDP, a TCP
// client, a UDP client. Every client gives up after a second; servers
// live until the test kills them.

// netns is where the traffic tools run for p.
func (p *pod) netns() e2eutil.Netns { return e2eutil.IPNetns(p.Name, p.NetnsName) }

// startServer runs the server tool in p's netns until the test ends.
func startServer(t *testing.T, p *pod, ports ...string) {
	t.Helper()
	p.netns().StartServer(t, ports...)
}

// canTCP reports whether from can open a TCP connection to ip:port.
func canTCP(from *pod, ip, port string) bool {
	return from.netns().CanTCP(net.JoinHostPort(ip, port))
}

// canTCPFrom binds the client to src first (spoofing test).
func canTCPFrom(from *pod, src, ip, port string) bool {
	return from.netns().CanTCPFrom(src, net.JoinHostPort(ip, port))
}

// canUDP reports whether from gets an echo from ip:port.
func canUDP(from *pod, ip, port string) bool {
	return from.netns().CanUDP(net.JoinHostPort(ip, port))
}

// canPing reports whether from gets an ICMP echo reply from ip (one try:
// the suites assert drops too).
func canPing(from *pod, ip string) bool {
	return from.netns().CanPing(ip)
}
