/* Maps of Membrane's datapath. Every map is pinned by name under the
 * agent's --bpf-root, so the agent (Go, datapath/maps mirrors these
 * layouts), the debug CLI and a restarted agent share them. */
#pragma once

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

#define DIR_INGRESS 0 /* into the endpoint: to-container */
#define DIR_EGRESS 1  /* out of the endpoint: from-container */

#define IDENTITY_ANY 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_WORLD_IPV4 9
#define IDENTITY_WORLD_IPV6 10

/* ipcache: prefix -> identity (LPM). prefixlen counts family+pad (32 bits)
 * plus the prefix bits. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	/* The host-side veth of the local endpoint behind the prefix, 0 for
	 * anything else: where eBPF host routing hands a packet for it
	 * (--host-routing=bpf). */
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 512 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ipcache SEC(".maps");

/* endpoints: host-side ifindex -> the endpoint behind that veth. */
#define EP_F_HAS_IPV4 (1 << 0)
#define EP_F_HAS_IPV6 (1 << 1)
#define EP_F_INGRESS_ENFORCED (1 << 2)
#define EP_F_EGRESS_ENFORCED (1 << 3)

struct endpoint_key {
	__u32 ifindex;
};

struct endpoint_info {
	__u16 endpoint_id;
	__u16 flags;
	__u32 identity;
	__u8 ipv4[4];
	__u8 ipv6[16];
	__u8 mac[6];
	__u8 host_mac[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_endpoints SEC(".maps");

/* policy: (endpoint, direction, peer identity, protocol, port) -> verdict.
 * An LPM trie: the first 64 bits (endpoint, direction, identity) are always
 * matched exactly; protocol (8 bits) and the destination port (16 bits,
 * network order, after 8 bits of padding) may be wildcarded by a shorter
 * prefix, so a port range is a handful of prefixes rather than one entry
 * per port. Identity 0 entries match any peer; the program looks up the
 * peer's identity and the wildcard and lets a deny in either win. */
#define POLICY_PREFIX_STATIC 64
#define POLICY_PREFIX_FULL 96

struct policy_key {
	__u32 prefixlen;
	__u16 endpoint_id;
	__u8 direction;
	__u8 pad0;
	__u32 identity;
	__u8 protocol;
	__u8 pad1;
	__be16 dport;
};

#define POLICY_F_DENY (1 << 0)

struct policy_value {
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 1024 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_policy SEC(".maps");

/* conntrack: flows allowed at one enforcement point (an endpoint's ingress
 * or egress). dir is part of the key so that a flow allowed out of one pod
 * is still judged by the ingress policy of the pod it reaches. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 dir;
	__u8 pad;
};

struct ct_value {
	__u64 last_seen; /* ns, bpf_ktime_get_ns */
	__u16 endpoint_id;
	__u16 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_conntrack SEC(".maps");

/* metrics: packets and bytes by endpoint, direction and reason. */
struct metrics_key {
	__u16 endpoint_id;
	__u8 dir;
	__u8 reason;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_metrics SEC(".maps");

/* events: drops, and verdicts on new flows, for `membrane monitor`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_events SEC(".maps");

/* fragments: what the first fragment of a fragmented datagram said, so the
 * later ones (which carry no L4 header) get its ports and its verdict.
 * Keyed like the datagram (addresses, protocol, IP ID: the IPv4 ID in the
 * low 16 bits, the IPv6 fragment header's 32-bit ID) at one enforcement
 * point. Only a first fragment that passed writes an entry; a denied one
 * deletes it, so a later fragment finds nothing and drops. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 id;
	__u16 endpoint_id;
	__u8 protocol;
	__u8 family;
	__u8 dir;
	__u8 pad[3];
};

struct frag_value {
	__u64 last_seen; /* ns, bpf_ktime_get_ns, of the first fragment */
	__be16 sport;
	__be16 dport;
	__be16 policy_port;
	__u8 reason; /* the first fragment's (forwarding) reason */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_fragments SEC(".maps");
