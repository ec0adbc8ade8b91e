package main

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// TestBPFMaps pins maps with the agent's specs, fills them and reads them
// back with the CLI, with no agent anywhere.
func TestBPFMaps(t *testing.T) {
	root := testutil.BPFDir(t) // skips (or fails in CI) unless root
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}

	ipcache, err := ebpf.NewMapWithOptions(maps.IPCacheSpec(), ebpf.MapOptions{PinPath: root})
	if err != nil {
		t.Fatal(err)
	}
	defer ipcache.Close()
	for p, v := range map[string]maps.IPCacheValue{
		"fd00::7/128":   {Identity: 256},
		"10.200.0.8/32": {Identity: 257},
		"10.200.0.7/32": {Identity: 256, IfIndex: 1},
		"0.0.0.0/0":     {Identity: 2},
		"10.0.0.0/8":    {Identity: 1<<24 | 1},
	} {
		if err := ipcache.Put(maps.NewIPCacheKey(netip.MustParsePrefix(p)), v); err != nil {
			t.Fatalf("ipcache put %s: %v", p, err)
		}
	}

	endpoints, err := ebpf.NewMapWithOptions(maps.EndpointsSpec(), ebpf.MapOptions{PinPath: root})
	if err != nil {
		t.Fatal(err)
	}
	defer endpoints.Close()
	for ifindex, v := range map[uint32]maps.EndpointValue{
		1: maps.NewEndpointValue(17, 256, netip.MustParseAddr("10.200.0.7"), netip.MustParseAddr("fd00::7"),
			"02:00:00:00:00:11", "02:00:00:00:00:12"),
		999999: maps.NewEndpointValue(5, 257, netip.MustParseAddr("10.200.0.8"), netip.Addr{}, "", ""),
	} {
		if err := endpoints.Put(maps.EndpointKey{IfIndex: ifindex}, v); err != nil {
			t.Fatalf("endpoints put %d: %v", ifindex, err)
		}
	}

	// The agent's socket does not exist: the bpf commands do not need it.
	noAgent := tempSocket(t)
	wantLines(t, ok(t, "--socket", noAgent, "bpf", "ipcache", "list", "--bpf-root", root),
		"PREFIX          IDENTITY   IFINDEX   SOURCE",
		"0.0.0.0/0       2          -         -",
		"10.0.0.0/8      16777217   -         -",
		"10.200.0.7/32   256        1         -",
		"10.200.0.8/32   257        -         -",
		"fd00::7/128     256        -         -",
	)
	// Endpoint 17 sits on ifindex 1, the loopback device of this netns.
	wantLines(t, ok(t, "--socket", noAgent, "bpf", "endpoint", "list", "--bpf-root", root),
		"ENDPOINT   IFINDEX   INTERFACE   IDENTITY   IPV4         IPV6      MAC                 HOST MAC",
		"5          999999    -           257        10.200.0.8   -         -                   -",
		"17         1         lo          256        10.200.0.7   fd00::7   02:00:00:00:00:11   02:00:00:00:00:12",
	)

	var entries []ipcacheEntry
	mustJSON(t, ok(t, "bpf", "ipcache", "list", "--bpf-root", root, "-o", "json"), &entries)
	if len(entries) != 5 || entries[4].Prefix != "fd00::7/128" || entries[4].Identity != 256 {
		t.Fatalf("ipcache JSON %+v", entries)
	}
	var eps []endpointMapEntry
	mustJSON(t, ok(t, "bpf", "endpoint", "list", "--bpf-root", root, "-o", "json"), &eps)
	want := endpointMapEntry{IfIndex: 1, Interface: "lo", EndpointID: 17, Identity: 256, IPv4: "10.200.0.7", IPv6: "fd00::7",
		MAC: "02:00:00:00:00:11", HostMAC: "02:00:00:00:00:12", Flags: maps.EndpointFlagHasIPv4 | maps.EndpointFlagHasIPv6}
	if len(eps) != 2 || eps[1] != want {
		t.Fatalf("endpoints JSON %+v, want [1] = %+v", eps, want)
	}

	// A deleted entry disappears from the listing.
	if err := ipcache.Delete(maps.NewIPCacheKey(netip.MustParsePrefix("0.0.0.0/0"))); err != nil {
		t.Fatal(err)
	}
	if out := ok(t, "bpf", "ipcache", "list", "--bpf-root", root); strings.Contains(out, "0.0.0.0/0") {
		t.Fatalf("deleted entry still listed:\n%s", out)
	}
}

// TestBPFMissingMaps: without pinned maps the error names the pin and the flag.
func TestBPFMissingMaps(t *testing.T) {
	root := t.TempDir() + "/nothing"
	for _, m := range []string{"ipcache", "endpoint"} {
		e := fails(t, "bpf", m, "list", "--bpf-root", root)
		name := maps.IPCacheMapName
		if m == "endpoint" {
			name = maps.EndpointsMapName
		}
		if !strings.Contains(e, "open pinned map "+root+"/"+name) || !strings.Contains(e, "--bpf-root="+root) {
			t.Errorf("stderr %q", e)
		}
		if os.Geteuid() == 0 && !strings.Contains(e, "no such file or directory") {
			t.Errorf("stderr %q does not say the pin is missing", e)
		}
	}
}
