#!/usr/bin/env bash
# A narrated tour of Membrane on one machine (`make demo` runs it after
# building bin/). It starts membrane-agent with its default cells on
# throwaway paths, registers four pods' labels, creates the pods as network
# namespaces through the real CNI path (cnitool -> membrane-cni -> agent),
# and shows what the agent made of them: endpoints, identities, the ipcache
# map in the kernel. It relabels a pod to show its identity follow. Then
# policy: a server in pod db, a CiliumNetworkPolicy that lets only web
# reach it, an allowed and a dropped connection, the trace that explains
# each, the monitor catching the drop, and the policy deleted again.
# Finally it deletes the pods.
#
# Needs root (netns, veth, BPF) and socat (the demo's TCP server and
# client; `make demo` installs it). Leaves nothing behind: the server, the
# monitor and the agent are stopped (by PID) and the netns, pinned maps and
# temp files are removed on exit, whatever happened.
#
# Environment (all optional):
#   BIN                where membrane-agent, membrane-cni, membrane are (default: bin/)
#   DEMO_POD_CIDR      the demo agent's --pod-cidr (default 10.200.0.0/24)
#   DEMO_BPF_ROOT      the demo agent's --bpf-root (default /sys/fs/bpf/membrane-demo)
#   DEMO_KEEP_LOG=1    print the agent's log at the end
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$repo/bin}
case $BIN in /*) ;; *) BIN=$repo/$BIN ;; esac
cidr=${DEMO_POD_CIDR:-10.200.0.0/24}
bpf_root=${DEMO_BPF_ROOT:-/sys/fs/bpf/membrane-demo}
export PATH="$PATH:/usr/local/go/bin"

# ---- presentation --------------------------------------------------------

if [ -t 1 ]; then bold=$(printf '\033[1m') dim=$(printf '\033[2m') off=$(printf '\033[0m'); else bold= dim= off=; fi
step_no=0
step() { # step TITLE EXPLANATION...
	step_no=$((step_no + 1))
	printf '\n%s== %d. %s%s\n' "$bold" "$step_no" "$1" "$off"
	shift
	for line in "$@"; do printf '%s\n' "$line"; done
}
say() { printf '%s%s%s\n' "$dim" "$*" "$off"; }
show() { # show CMD...: print the command as a user would type it, run it
	printf '%s$ %s%s\n' "$bold" "$*" "$off"
	"$@"
}
die() {
	printf '\ndemo failed: %s\n' "$*" >&2
	exit 1
}

# membrane is the CLI bound to the demo agent; shown as plain `membrane`.
membrane() { "$BIN/membrane" --socket "$sock" "$@"; }
# cnitool is the runtime's side of CNI, built from this module's go.mod.
cnitool() {
	(cd "$repo" && CNI_PATH="$BIN" NETCONFPATH="$work/net.d" CNI_IFNAME=eth0 go tool cnitool "$@")
}

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds, at most SECONDS.
wait_for() {
	local limit=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s) + limit))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			die "timed out after ${limit}s waiting for $what"
		fi
		if [ -n "${agent_pid:-}" ] && ! kill -0 "$agent_pid" 2>/dev/null; then
			die "membrane-agent exited while waiting for $what (log: see below)"
		fi
		sleep 0.2
	done
}

# field_of ID KEY [SUBKEY]: a field of an endpoint, from `-o yaml`.
field_of() {
	membrane endpoint get "$1" -o yaml | awk -v k="$2" -v s="${3:-}" '
		s == "" && $1 == k":" { print $2; exit }
		s != "" && $1 == k":" { in_k = 1; next }
		in_k && /^[^ ]/ { in_k = 0 }
		in_k && $1 == s":" { print $2; exit }'
}
identity_of() { field_of "pod-name:default/$1" identity id; }
state_of() { field_of "pod-name:default/$1" state; }
is_ready() { [ "$(state_of "$1")" = ready ]; }
identity_is_not() { local id; id=$(identity_of "$1") && [ -n "$id" ] && [ "$id" != "$2" ] && is_ready "$1"; }
ip_of() { ip -n "$netns_prefix-$1" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}'; }
# in_ipcache ADDR [ID]: the pinned ipcache map maps ADDR/32 (to ID).
in_ipcache() {
	membrane bpf ipcache list --bpf-root "$bpf_root" |
		awk -v p="$1/32" -v id="${2:-}" '$1 == p && (id == "" || $2 == id) { found = 1 } END { exit !found }'
}

# tcp_try POD ADDR PORT: one TCP connection from POD, 1 s to connect; prints
# what the server says.
tcp_try() {
	ip netns exec "$netns_prefix-$1" timeout 3 socat -u -T1 "TCP:$2:$3,connect-timeout=1" STDOUT
}
# connect POD ADDR PORT: tcp_try, shown as the command a user would type.
connect() {
	printf '%s$ ip netns exec %s socat -u TCP:%s:%s,connect-timeout=1 STDOUT%s\n' \
		"$bold" "$netns_prefix-$1" "$2" "$3" "$off"
	tcp_try "$@"
}
expect_allowed() { # expect_allowed POD ADDR PORT
	connect "$@" || die "$1 could not connect to $2:$3, which should be allowed"
	say "-> connected: allowed"
}
expect_dropped() { # expect_dropped POD ADDR PORT
	! connect "$@" 2>/dev/null || die "$1 connected to $2:$3, which policy should drop"
	say "-> no connection within 1 s: dropped"
}
policy_revision() { membrane policy get -o yaml | awk '/^revision:/ { print $2; exit }'; }
# enforces POD REVISION: the pod's endpoint is ready and reports at least
# policy revision REVISION, i.e. its datapath enforces that policy.
enforces() {
	local rev
	is_ready "$1" && rev=$(field_of "pod-name:default/$1" policy-revision) && [ "${rev:-0}" -ge "$2" ]
}

# ---- preflight -----------------------------------------------------------

[ "$(id -u)" = 0 ] || die "run as root: the demo creates network namespaces, veths and BPF maps"
for b in membrane-agent membrane-cni membrane; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make build' (or 'make demo', which builds first)"
done
for tool in ip ping ss socat timeout go; do
	command -v "$tool" >/dev/null || die "'$tool' is not installed ('make demo' installs what is missing)"
done
if [ -n "$(ip -4 route show root "$cidr" 2>/dev/null)" ]; then
	die "routes into $cidr exist already (another agent?): set DEMO_POD_CIDR to a free range"
fi
if [ -e "$bpf_root" ]; then
	die "$bpf_root exists (a demo still running, or left over): remove it or set DEMO_BPF_ROOT"
fi

# ---- cleanup, whatever happens -------------------------------------------

work=$(mktemp -d /tmp/membrane-demo.XXXXXX)
sock=$work/membrane.sock
pods=(web-1 web-2 db batch)
netns_prefix=mbdemo-$$
agent_pid= server_pid= monitor_pid=

cleanup() {
	local rc=$? p ns cid
	set +e
	trap - EXIT INT TERM
	# The demo's own processes, by PID: the monitor, then the server (a
	# netns with a process left in it would outlive `ip netns del`).
	for pid in $monitor_pid $server_pid; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for p in "${pods[@]}"; do
		ns=/var/run/netns/$netns_prefix-$p
		[ -e "$ns" ] || continue
		# The demo stopped half-way: DEL the pod properly while the agent
		# can still release its address (the plugin bounds DEL to 30s).
		if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
			CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$p" cnitool del membrane "$ns" >/dev/null 2>&1
		fi
		# Deleting the netns deletes the pod's veth, with its host end and routes.
		ip netns del "$netns_prefix-$p"
		# What cnitool (libcni) cached for the attachment, should DEL not have run.
		cid=$(printf '%s' "$ns" | sha512sum | cut -c1-20)
		rm -f "/var/lib/cni/results/membrane-cnitool-$cid-eth0"
	done
	if [ -n "$agent_pid" ]; then
		kill "$agent_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$agent_pid" 2>/dev/null
		wait "$agent_pid" 2>/dev/null
	fi
	rm -rf "$bpf_root"
	if [ "$rc" != 0 ] || [ "${DEMO_KEEP_LOG:-}" = 1 ]; then
		printf '\n---- membrane-agent log (last 40 lines) ----\n' >&2
		tail -n 40 "$work/agent.log" >&2
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the tour --------------------------------------------------------------

step "Start the agent" \
	"membrane-agent is a hive of cells (API server, IPAM, pod metadata, endpoint" \
	"manager and API, identity, policy repository and engine, regeneration," \
	"loader, monitor, ...) sharing statedb tables." \
	"This one runs the default cells on throwaway paths, so it disturbs nothing."
say "state dir $work/state, socket $sock, bpffs $bpf_root, pod CIDR $cidr"
"$BIN/membrane-agent" --socket="$sock" --state-dir="$work/state" --bpf-root="$bpf_root" \
	--pod-cidr="$cidr" >"$work/agent.log" 2>&1 &
agent_pid=$!
wait_for 20 "the agent's API socket" membrane status
show membrane status

step "Register the pods' labels" \
	"The CNI plugin only knows a pod's name; its labels come from the pods table," \
	"filled here from Kubernetes Pod manifests (a pod watcher would do the same)."
show membrane pod apply -f scripts/demo/pods.yaml
show membrane pod list

step "Create the pods" \
	"Each pod is a network namespace. cnitool plays the container runtime and" \
	"runs membrane-cni ADD, which asks the agent for an address (POST /v1/ipam)," \
	"wires a veth into the pod and creates the endpoint with a sync build" \
	"(PUT /v1/endpoint/0): ADD returns only once the endpoint is ready."
mkdir -p "$work/net.d"
cat >"$work/net.d/10-membrane.conflist" <<EOF
{"cniVersion":"1.1.0","name":"membrane","plugins":[{"type":"membrane-cni","socket":"$sock"}]}
EOF
say "$(cat "$work/net.d/10-membrane.conflist")"
for p in "${pods[@]}"; do
	ip netns add "$netns_prefix-$p"
	printf '%s$ CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" cnitool add membrane /var/run/netns/%s%s\n' \
		"$bold" "$p" "$netns_prefix-$p" "$off"
	start=$(date +%s%N)
	CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$p" \
		cnitool add membrane "/var/run/netns/$netns_prefix-$p" >"$work/$p.result" ||
		die "cnitool add for pod $p failed"
	ms=$((($(date +%s%N) - start) / 1000000))
	addr=$(ip -n "$netns_prefix-$p" -4 -o addr show dev eth0 | awk '{print $4}')
	say "pod $p: eth0 $addr, ready after ${ms} ms"
done

step "Endpoints" \
	"One endpoint per pod, each ready: its identity resolved and its datapath" \
	"rows (ipcache, endpoint map) written to the kernel."
show membrane endpoint list
for p in "${pods[@]}"; do is_ready "$p" || die "endpoint of pod $p is $(state_of "$p"), not ready"; done
show membrane endpoint log pod-name:default/web-1

step "Identities" \
	"Identities are numbers for sets of security labels. web-1 and web-2 share" \
	"one although their pod-template-hash differs: the default label filter" \
	"drops it. db and batch have labels of their own, so identities of their own."
show membrane identity list
web1=$(identity_of web-1) web2=$(identity_of web-2) db=$(identity_of db) batch=$(identity_of batch)
[ "$web1" = "$web2" ] || die "web-1 ($web1) and web-2 ($web2) should share an identity"
[ "$web1" != "$db" ] && [ "$web1" != "$batch" ] && [ "$db" != "$batch" ] ||
	die "web ($web1), db ($db) and batch ($batch) should have identities of their own"
say "web-1 -> $web1, web-2 -> $web2, db -> $db, batch -> $batch"

step "The datapath's view" \
	"The agent's tables are reconciled into pinned BPF maps. The ipcache maps" \
	"each pod IP to its identity (and the node's own addresses to identity 1," \
	"host); the endpoint map tells the programs on each pod's host veth whose" \
	"traffic they see. The bpf commands read the pins directly and work even" \
	"while the agent is down."
show membrane statedb ipcache
show membrane bpf ipcache list --bpf-root "$bpf_root"
show membrane bpf endpoint list --bpf-root "$bpf_root"
show membrane ipam list
for p in "${pods[@]}"; do
	in_ipcache "$(ip_of "$p")" "$(identity_of "$p")" || die "the ipcache map lacks pod $p's address -> identity"
done

step "Connectivity" \
	"Each pod routes through the gateway, the first address of the pod CIDR," \
	"which the plugin put on the pod's host-side veth."
gw=$(ip -n "$netns_prefix-web-1" route show default | awk '{print $3; exit}')
[ -n "$gw" ] || die "pod web-1 has no default route"
show ip netns exec "$netns_prefix-web-1" ping -c 2 -W 2 "$gw"

step "Relabel a pod" \
	"web-2 becomes a canary (track=canary). The pods table changes; the endpoint" \
	"manager updates the endpoint's labels, the identity allocator gives it the" \
	"identity of its new labels, regeneration rewrites its ipcache entry." \
	"No cell calls another: each reacts to the rows the previous one wrote."
show membrane pod apply -f scripts/demo/web-2-canary.yaml
wait_for 20 "web-2 to move to a new identity" identity_is_not web-2 "$web2"
new=$(identity_of web-2)
in_ipcache "$(ip_of web-2)" "$new" || die "the ipcache map does not follow web-2 to identity $new"
say "web-2: identity $web2 -> $new (web-1 keeps $(identity_of web-1))"
show membrane endpoint labels pod-name:default/web-2
show membrane bpf ipcache list --bpf-root "$bpf_root"

step "A server, and no policy yet" \
	"db runs a tiny TCP server on port 5432 (socat, standing in for PostgreSQL)." \
	"No rule selects any endpoint, so no direction is enforced: every pod" \
	"reaches it (a packet passes with reason policy-not-enforced)."
db_ip=$(ip_of db) db_id=$(field_of pod-name:default/db id)
say "$ ip netns exec $netns_prefix-db socat TCP-LISTEN:5432,reuseaddr,fork SYSTEM:'echo hello from db' &"
ip netns exec "$netns_prefix-db" socat TCP-LISTEN:5432,reuseaddr,fork SYSTEM:'echo hello from db' &
server_pid=$!
listening() { ip netns exec "$netns_prefix-db" ss -Hltn 'sport = :5432' | grep -q .; }
wait_for 10 "the server in db to listen" listening
if ! tcp_try web-1 "$db_ip" 5432 >/dev/null 2>&1; then
	die "web-1 cannot reach db:5432 without any policy: does the host drop forwarded traffic? (iptables -S FORWARD)"
fi
expect_allowed web-1 "$db_ip" 5432
expect_allowed batch "$db_ip" 5432

step "Import a policy" \
	"scripts/demo/policy.yaml is a CiliumNetworkPolicy: pods labelled app=db accept" \
	"TCP 5432 from pods labelled app=web, and nothing else. The repository stores" \
	"its rule under a new policy revision; the policy engine computes db's" \
	"endpoint-policy row (ingress now default deny); the loader writes it into" \
	"the policy map; regeneration moves db back through regenerating to ready," \
	"reporting the new revision. No pod is touched."
sed -n '/^apiVersion/,$p' scripts/demo/policy.yaml | while IFS= read -r line; do say "  $line"; done
show membrane policy import -f scripts/demo/policy.yaml
rev=$(policy_revision)
[ -n "$rev" ] && [ "$rev" -ge 1 ] || die "the agent reports no policy revision after the import"
wait_for 20 "db to enforce policy revision $rev" enforces db "$rev"
show membrane policy get
say "db went back through regeneration and now reports revision $rev:"
show membrane endpoint log pod-name:default/db
say "What reached the kernel for db (endpoint $db_id): both identities with app=web"
say "(web-1's, and web-2's since it became a canary) may use TCP 5432; the host is"
say "allowed by --allow-localhost (kubelet probes); everything else drops."
show membrane bpf policy get "$db_id" --bpf-root "$bpf_root"

step "Allowed and dropped" \
	"web-1 connects to db:5432: its identity and port match the allow entry." \
	"batch tries the same: its identity has no entry, db's ingress is default" \
	"deny, and to_container drops the SYN on db's veth. A monitor, subscribed" \
	"before the attempt, catches the drop as it happens."
expect_allowed web-1 "$db_ip" 5432
say "$ membrane monitor --type drop --endpoint $db_id --count 1 &"
# The binary itself, not the membrane function, so that $! is its PID.
"$BIN/membrane" --socket "$sock" monitor --type drop --endpoint "$db_id" --count 1 >"$work/monitor.out" 2>&1 &
monitor_pid=$!
# Subscribed once its connection to the agent's socket is up (the agent
# subscribes before it answers the request's headers).
subscribed() { ss -Hxp | grep -q "pid=$monitor_pid,"; }
wait_for 10 "the monitor to subscribe" subscribed
sleep 0.3
expect_dropped batch "$db_ip" 5432
for _ in $(seq 50); do kill -0 "$monitor_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$monitor_pid" 2>/dev/null; then
	die "the monitor saw no drop within 5 s of the dropped connection"
fi
wait "$monitor_pid" || die "membrane monitor failed: $(cat "$work/monitor.out")"
monitor_pid=
cat "$work/monitor.out"
grep -q "policy-denied" "$work/monitor.out" || die "the monitor's drop is not policy-denied"
show membrane bpf metrics --endpoint "$db_id" --bpf-root "$bpf_root"

step "Ask why" \
	"membrane policy trace evaluates the rules for two label sets, without" \
	"sending a packet: the verdict, and the rule (or the default deny) behind it." \
	"Give the labels of the identities, namespace included: a CiliumNetworkPolicy" \
	"applies only to endpoints of its namespace."
ns=k8s:io.kubernetes.pod.namespace=default
# trace SRC-APP: the trace from app=SRC-APP to db on 5432/TCP, shown; its verdict in $verdict.
trace() {
	show membrane policy trace --src-labels "k8s:app=$1,$ns" --dst-labels "k8s:app=db,$ns" --dport 5432/TCP |
		tee "$work/trace.out"
	verdict=$(awk '$1 == "Verdict:" { print $2; exit }' "$work/trace.out")
}
trace web
[ "$verdict" = allowed ] || die "trace web -> db:5432 says $verdict, not allowed"
trace batch
[ "$verdict" = denied ] || die "trace batch -> db:5432 says $verdict, not denied"

step "Delete the policy" \
	"Deleting the rules by the labels the import derived from the object's name" \
	"is another revision: db's ingress is no longer enforced, and batch" \
	"reaches it again. Again no pod is touched."
show membrane policy delete k8s:io.cilium.k8s.policy.name=db-from-web
rev=$(policy_revision)
wait_for 20 "db to enforce policy revision $rev" enforces db "$rev"
expect_allowed batch "$db_ip" 5432
kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
server_pid=

step "Delete the pods" \
	"membrane-cni DEL removes the endpoint (its ipcache and endpoint-map entries" \
	"follow), releases the address and deletes the veth. Identities no" \
	"endpoint uses are released; the host's own addresses stay in the ipcache."
declare -A pod_ip
for p in "${pods[@]}"; do pod_ip[$p]=$(ip_of "$p"); done
for p in "${pods[@]}"; do
	printf '%s$ CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s" cnitool del membrane /var/run/netns/%s%s\n' \
		"$bold" "$p" "$netns_prefix-$p" "$off"
	CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$p" \
		cnitool del membrane "/var/run/netns/$netns_prefix-$p" || die "cnitool del for pod $p failed"
	ip netns del "$netns_prefix-$p"
done
no_endpoints() { [ "$(membrane endpoint list -o json | tr -d ' \n')" = "[]" ]; }
wait_for 10 "the endpoints to go" no_endpoints
show membrane endpoint list
show membrane identity list
show membrane bpf ipcache list --bpf-root "$bpf_root"
for p in "${pods[@]}"; do
	! in_ipcache "${pod_ip[$p]}" || die "the ipcache map still holds pod $p's address ${pod_ip[$p]}"
done

printf '\n%sDemo complete.%s Stopping the agent and removing its state.\n' "$bold" "$off"
