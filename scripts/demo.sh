#!/usr/bin/env bash
# A narrated tour of Membrane on one machine (`make demo` runs it after
# building bin/). It starts membrane-agent with its default cells on
# throwaway paths, registers three pods' labels, creates the pods as network
# namespaces through the real CNI path (cnitool -> membrane-cni -> agent),
# and shows what the agent made of them: endpoints, identities, the ipcache
# map in the kernel. Then it pings the pods' gateway, relabels a pod to show
# its identity follow, and deletes the pods.
#
# Needs root (netns, veth, BPF). Leaves nothing behind: the agent is
# stopped and its netns, pinned maps and temp files are removed on exit,
# whatever happened.
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

# ---- preflight -----------------------------------------------------------

[ "$(id -u)" = 0 ] || die "run as root: the demo creates network namespaces, veths and BPF maps"
for b in membrane-agent membrane-cni membrane; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make build' (or 'make demo', which builds first)"
done
for tool in ip ping go; do
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
pods=(web-1 web-2 db)
netns_prefix=mbdemo-$$
agent_pid=

cleanup() {
	local rc=$? p ns cid
	set +e
	trap - EXIT INT TERM
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
	"manager and API, identity, regeneration, loader, ...) sharing statedb tables." \
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
	"drops it. db has labels of its own, so it has an identity of its own."
show membrane identity list
web1=$(identity_of web-1) web2=$(identity_of web-2) db=$(identity_of db)
[ "$web1" = "$web2" ] || die "web-1 ($web1) and web-2 ($web2) should share an identity"
[ "$web1" != "$db" ] || die "db should not share web's identity $web1"
say "web-1 -> $web1, web-2 -> $web2, db -> $db"

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
say "No policy is enforced yet (issue 3), so pods reach each other through the host too:"
db_ip=$(ip_of db)
if ! show ip netns exec "$netns_prefix-web-1" ping -c 1 -W 2 "$db_ip"; then
	say "(no answer: the host's firewall drops forwarded traffic; the demo goes on)"
fi

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
