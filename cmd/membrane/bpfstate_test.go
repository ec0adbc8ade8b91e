package main

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/datapath/maps"
	"github.com/membrane-net/membrane/internal/testutil"
)

// pinMap creates a map with the datapath's spec, pinned under root.
func pinMap(t *testing.T, root, name string) *ebpf.Map {
	t.Helper()
	spec, err := maps.Spec(name)
	if err != nil {
		t.Fatal(err)
	}
	spec.Pinning = ebpf.PinByName
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: root})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mustPut(t *testing.T, m *ebpf.Map, k, v any) {
	t.Helper()
	if err := m.Put(k, v); err != nil {
		t.Fatalf("put %+v: %v", k, err)
	}
}

// TestBPFPolicyGet pins an endpoints and a policy map as the loader fills
// them and reads one endpoint's policy back, with the labels of the
// identities of the agent's endpoints, and without the agent.
func TestBPFPolicyGet(t *testing.T) {
	a := startAgent(t)
	ids := map[string]uint32{"world": 2}
	for _, app := range []string{"db", "cache"} {
		a.putPod(models.Pod{Namespace: "default", Name: app, Labels: map[string]string{"app": app}})
		ids[app] = a.addEndpoint(endpointSpec{container: app + "-0123456789", pod: "default/" + app}).Identity.ID
	}
	db, cache := ids["db"], ids["cache"]

	// The maps of another bpffs directory than the agent's.
	t.Run("pinned maps", func(t *testing.T) {
		root := testutil.BPFDir(t)
		if err := rlimit.RemoveMemlock(); err != nil {
			t.Fatal(err)
		}
		eps := pinMap(t, root, maps.EndpointsMapName)
		v := maps.NewEndpointValue(17, db, netip.MustParseAddr("10.200.0.7"), netip.Addr{}, "", "")
		v.Flags |= maps.EndpointFlagIngressEnforced
		mustPut(t, eps, maps.EndpointKey{IfIndex: 40}, v)

		pol := pinMap(t, root, maps.PolicyMapName)
		allow := func(ep uint16, dir uint8, id uint32, proto uint8, port, end uint16, deny bool) {
			var v maps.PolicyValue
			if deny {
				v.Flags = maps.PolicyFlagDeny
			}
			for _, k := range maps.PolicyKeys(ep, dir, id, proto, port, end) {
				mustPut(t, pol, k, v)
			}
		}
		allow(17, 0, db, 6, 80, 0, false)
		allow(17, 0, cache, 6, 8000, 8080, false) // three LPM prefixes
		allow(17, 0, ids["world"], 0, 0, 0, true) // deny everything from world
		allow(17, 0, 0, 17, 0, 0, false)          // UDP, all ports, from anyone
		allow(17, 1, db, 1, 0, 0, false)          // egress ICMP type 0 (echo reply): a one-"port" entry
		k0 := maps.PolicyKeys(17, 1, db, 1, 0, 0)[0]
		k0.PrefixLen = maps.PolicyPrefixFull
		mustPut(t, pol, k0, maps.PolicyValue{})
		allow(5, 0, db, 6, 443, 0, false) // another endpoint

		id := func(n uint32) string { return padRight(strconv.Itoa(int(n)), 11) }
		const ns = "k8s:io.kubernetes.pod.namespace=default"
		wantLines(t, ok(t, a.args("bpf", "policy", "get", "17", "--bpf-root", root)...),
			"Endpoint 17: ingress enforced (only what an entry allows passes); egress not enforced (everything passes unless denied)",
			"DIRECTION   IDENTITY   LABELS                                    PROTOCOL   PORT        VERDICT",
			"ingress     any        -                                         UDP        any         allow",
			"ingress     2          reserved:world                            any        any         deny",
			"ingress     "+id(db)+"k8s:app=db                                TCP        80          allow",
			"                       "+ns,
			"ingress     "+id(cache)+"k8s:app=cache                             TCP        8000-8080   allow",
			"                       "+ns,
			"egress      "+id(db)+"k8s:app=db                                ICMP       0           allow",
			"                       "+ns,
			"egress      "+id(db)+"k8s:app=db                                ICMP       any         allow",
			"                       "+ns,
		)

		// --raw: one line per LPM entry.
		out := ok(t, a.args("bpf", "policy", "get", "17", "--bpf-root", root, "--raw")...)
		for _, want := range []string{"TCP        8000-8063   allow", "TCP        8064-8079   allow", "TCP        8080        allow"} {
			if !strings.Contains(out, want) {
				t.Errorf("--raw lacks %q:\n%s", want, out)
			}
		}

		var got endpointPolicy
		mustJSON(t, ok(t, a.args("bpf", "policy", "get", "17", "--bpf-root", root, "-o", "json")...), &got)
		if !got.InEndpointsMap || !got.IngressEnforced || got.EgressEnforced || len(got.Entries) != 6 {
			t.Fatalf("JSON %+v", got)
		}
		if e := got.Entries[3]; e.Identity != cache || e.Protocol != "TCP" || e.ProtocolNumber != 6 || e.Port != 8000 || e.EndPort != 8080 ||
			e.Verdict != "allow" || e.Direction != "ingress" || len(e.Labels) != 2 {
			t.Fatalf("entry %+v", e)
		}
		if e := got.Entries[0]; e.Identity != 0 || e.Port != 0 || e.EndPort != 65535 {
			t.Fatalf("all ports entry %+v", e)
		}
		wantLines(t, ok(t, a.args("bpf", "policy", "get", "99", "--bpf-root", root)...),
			"Endpoint 99: not in mb_endpoints (no interface attached with it: its programs would drop every packet)",
			"No entries in mb_policy for endpoint 99.")

		// list: every endpoint's entries, and the count of map entries
		// (8000-8080 is three LPM keys, merged into one line).
		wantLines(t, ok(t, a.args("bpf", "policy", "list", "--bpf-root", root)...),
			"ENDPOINT   DIRECTION   IDENTITY   PROTOCOL   PORT        VERDICT",
			"5          ingress     "+id(db)+"TCP        443         allow",
			"17         ingress     any        UDP        any         allow",
			"17         ingress     2          any        any         deny",
			"17         ingress     "+id(db)+"TCP        80          allow",
			"17         ingress     "+id(cache)+"TCP        8000-8080   allow",
			"17         egress      "+id(db)+"ICMP       0           allow",
			"17         egress      "+id(db)+"ICMP       any         allow",
			"9 entries in mb_policy.",
		)
		if out := ok(t, a.args("bpf", "policy", "list", "--bpf-root", root, "--raw")...); strings.Count(out, "\n") != 11 ||
			!strings.Contains(out, "17         ingress     "+id(cache)+"TCP        8064-8079   allow") {
			t.Errorf("list --raw:\n%s", out)
		}
		var l policyList
		mustJSON(t, ok(t, a.args("bpf", "policy", "list", "--bpf-root", root, "-o", "json")...), &l)
		if l.MapEntries != 9 || len(l.Entries) != 7 || l.Entries[0].EndpointID != 5 || l.Entries[0].Port != 443 ||
			l.Entries[4].EndpointID != 17 || l.Entries[4].EndPort != 8080 || l.Entries[4].Verdict != "allow" {
			t.Fatalf("list JSON %+v", l)
		}

		// Without the agent: numbers only, and a note saying why.
		a.stop()
		r := run(t, "", a.args("bpf", "policy", "get", "17", "--bpf-root", root)...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "\ningress     "+id(db)+"-        TCP        80          allow\n") ||
			!strings.Contains(r.stdout, "(identity labels not shown: cannot reach membrane-agent at "+a.sock) {
			t.Fatalf("without agent: %+v", r)
		}
		// An endpoint the endpoints map does not know, with entries.
		out = ok(t, a.args("bpf", "policy", "get", "5", "--bpf-root", root)...)
		if !strings.HasPrefix(out, "Endpoint 5: not in mb_endpoints") || !strings.Contains(out, "TCP        443") {
			t.Fatalf("endpoint 5:\n%s", out)
		}
		for _, bad := range []string{"web", "0", "70000"} {
			if e := fails(t, "bpf", "policy", "get", bad, "--bpf-root", root); !strings.Contains(e, "invalid endpoint ID") {
				t.Errorf("%s: %q", bad, e)
			}
		}
	})
}

// TestBPFConntrackAndMetrics reads conntrack entries and per-CPU counters
// from pinned maps.
func TestBPFConntrackAndMetrics(t *testing.T) {
	root := testutil.BPFDir(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	now := 1000 * time.Second
	saved := monotonicNow
	monotonicNow = func() time.Duration { return now }
	t.Cleanup(func() { monotonicNow = saved })

	ct := pinMap(t, root, maps.ConntrackMapName)
	flow := func(src, dst string, sport, dport uint16, proto, dir uint8) maps.ConntrackKey {
		s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
		k := maps.ConntrackKey{Protocol: proto, Dir: dir, Family: maps.FamilyIPv4}
		if s.Is6() {
			k.Family = maps.FamilyIPv6
			k.SAddr, k.DAddr = s.As16(), d.As16()
		} else {
			a, b := s.As4(), d.As4()
			copy(k.SAddr[:], a[:])
			copy(k.DAddr[:], b[:])
		}
		binary.BigEndian.PutUint16(k.SPort[:], sport)
		binary.BigEndian.PutUint16(k.DPort[:], dport)
		return k
	}
	seen := func(ago time.Duration, ep uint16) maps.ConntrackValue {
		return maps.ConntrackValue{LastSeen: uint64(now - ago), EndpointID: ep}
	}
	mustPut(t, ct, flow("10.0.0.6", "10.0.0.5", 41234, 80, 6, 0), seen(42*time.Second, 17))
	mustPut(t, ct, flow("10.0.0.5", "10.0.0.9", 5353, 53, 17, 1), seen(500*time.Millisecond, 17))
	mustPut(t, ct, flow("fd00::5", "fd00::9", 77, 0, 58, 1), seen(2*time.Hour+4*time.Minute, 17))
	mustPut(t, ct, flow("10.0.0.7", "10.0.0.5", 1000, 443, 6, 0), seen(-time.Second, 3)) // stamped after the clock was read

	wantLines(t, ok(t, "bpf", "ct", "list", "--bpf-root", root),
		"ENDPOINT   DIRECTION   PROTOCOL   SOURCE           DESTINATION    AGE",
		"3          ingress     TCP        10.0.0.7:1000    10.0.0.5:443   0s",
		"17         ingress     TCP        10.0.0.6:41234   10.0.0.5:80    42s",
		"17         egress      UDP        10.0.0.5:5353    10.0.0.9:53    500ms",
		"17         egress      ICMPv6     [fd00::5]:77     fd00::9        2h4m",
	)
	out := ok(t, "bpf", "ct", "list", "--bpf-root", root, "--endpoint", "3")
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, "10.0.0.7:1000") {
		t.Fatalf("--endpoint 3:\n%s", out)
	}
	var entries []ctEntry
	mustJSON(t, ok(t, "bpf", "ct", "list", "--bpf-root", root, "-o", "json"), &entries)
	if len(entries) != 4 || entries[1].Source != "10.0.0.6" || entries[1].SourcePort != 41234 || entries[1].AgeSeconds != 42 ||
		entries[1].Direction != "ingress" || entries[1].EndpointID != 17 {
		t.Fatalf("JSON %+v", entries)
	}

	metrics := pinMap(t, root, maps.MetricsMapName)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	perCPU := func(packets, bytes uint64) []maps.MetricsValue {
		vs := make([]maps.MetricsValue, ncpu)
		for i := range vs {
			vs[i] = maps.MetricsValue{Packets: packets, Bytes: bytes}
		}
		return vs
	}
	n := uint64(ncpu)
	mustPut(t, metrics, maps.MetricsKey{EndpointID: 17, Dir: 0, Reason: maps.ReasonDropPolicy}, perCPU(2, 120))
	mustPut(t, metrics, maps.MetricsKey{EndpointID: 17, Dir: 0, Reason: maps.ReasonForwardedPolicy}, perCPU(1, 60))
	mustPut(t, metrics, maps.MetricsKey{EndpointID: 17, Dir: 1, Reason: maps.ReasonForwardedCT}, perCPU(10, 1500))
	mustPut(t, metrics, maps.MetricsKey{EndpointID: 0, Dir: 1, Reason: maps.ReasonDropNoEndpoint}, perCPU(1, 42))

	u := func(v uint64) string { return strconv.FormatUint(v*n, 10) }
	out = ok(t, "bpf", "metrics", "--bpf-root", root)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("metrics:\n%s", out)
	}
	for i, want := range [][]string{
		{"ENDPOINT", "DIRECTION", "VERDICT", "REASON", "PACKETS", "BYTES"},
		{"0", "egress", "dropped", "no-endpoint", u(1), u(42)},
		{"17", "ingress", "forwarded", "allowed-by-policy", u(1), u(60)},
		{"17", "ingress", "dropped", "policy-denied", u(2), u(120)},
		{"17", "egress", "forwarded", "established", u(10), u(1500)},
	} {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("line %d: %q, want %q", i, lines[i], want)
		}
	}
	var ms []metricsEntry
	mustJSON(t, ok(t, "bpf", "metrics", "--bpf-root", root, "--endpoint", "17", "-o", "json"), &ms)
	if len(ms) != 3 || ms[2].Reason != "established" || ms[2].Packets != 10*n || ms[2].Bytes != 1500*n || ms[2].Verdict != "forwarded" {
		t.Fatalf("JSON %+v", ms)
	}
}

// TestBPFStateMissingMaps: without pinned maps the error names the pin.
func TestBPFStateMissingMaps(t *testing.T) {
	root := t.TempDir() + "/nothing"
	for _, c := range []struct {
		args []string
		name string
	}{
		{[]string{"bpf", "policy", "get", "1"}, maps.EndpointsMapName},
		{[]string{"bpf", "policy", "list"}, maps.PolicyMapName},
		{[]string{"bpf", "ct", "list"}, maps.ConntrackMapName},
		{[]string{"bpf", "metrics"}, maps.MetricsMapName},
	} {
		e := fails(t, append(c.args, "--bpf-root", root)...)
		if !strings.Contains(e, "open pinned map "+root+"/"+c.name) || !strings.Contains(e, "--bpf-root="+root) {
			t.Errorf("%v: stderr %q", c.args, e)
		}
	}
}
