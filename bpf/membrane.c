//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* Membrane's datapath: two programs attached to the host side of every
 * endpoint's veth.
 *
 *   from_container (tcx ingress): packets the pod sends. Source-address
 *     anti-spoofing, then the pod's egress policy.
 *   to_container (tcx egress): packets for the pod. Its ingress policy.
 *
 * They are loaded once and shared by all endpoints: what differs per
 * endpoint is found in maps keyed by the interface (mb_endpoints) and by
 * the endpoint ID (mb_policy), so regenerating an endpoint is map writes,
 * never a new program. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

char __license[] SEC("license") = "GPL";

/* Why a packet passed or was dropped (metrics and events). Mirrored in
 * datapath/maps/reasons.go. */
enum reason {
	REASON_FORWARDED_POLICY = 1,     /* new flow allowed by a policy entry */
	REASON_FORWARDED_CT = 2,         /* established flow or reply of one */
	REASON_FORWARDED_UNENFORCED = 3, /* direction not enforced */
	REASON_FORWARDED_NOT_IP = 4,     /* ARP, IPv6 neighbour discovery */
	REASON_DROP_POLICY = 10,         /* no entry allows it (default deny) */
	REASON_DROP_POLICY_DENY = 11,    /* a deny entry matched */
	REASON_DROP_SPOOFED = 12,        /* source address not the endpoint's */
	REASON_DROP_NO_ENDPOINT = 13,    /* interface without endpoint entry */
	REASON_DROP_MALFORMED = 14,      /* truncated or invalid header */
	/* Not a verdict: a monitor event that found the ring buffer full
	 * (counted as packets, with 0 bytes). */
	REASON_EVENT_LOST = 30,
};

enum event_type {
	EVENT_DROP = 1,
	EVENT_VERDICT = 2,
};

struct event {
	__u64 timestamp;
	__u32 ifindex;
	__u16 endpoint_id;
	__u8 dir;
	__u8 reason;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 type;
	__u8 pad;
};

#define CT_LIFETIME_TCP_NS (6ULL * 3600 * 1000000000ULL)
#define CT_LIFETIME_OTHER_NS (60ULL * 1000000000ULL)

#define IPPROTO_ICMPV6_ 58
#define ICMP_ECHO_ 8
#define ICMP_ECHOREPLY_ 0
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129

struct flow {
	__u8 family;
	__u8 protocol;
	__be16 sport; /* CT ports: TCP/UDP/SCTP ports, ICMP echo id */
	__be16 dport;
	__be16 policy_port; /* port the policy matches: dport, ICMP type */
	__u8 saddr[16];
	__u8 daddr[16];
};

/* parse fills f from the packet. Returns 1 for a packet policy does not
 * apply to (not IP, neighbour discovery), 0 for an IP packet, <0 if it is
 * malformed. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l4;
	__u8 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);
		if ((void *)(ip4 + 1) > data_end || ip4->ihl < 5)
			return -1;
		f->family = FAMILY_IPV4;
		proto = ip4->protocol;
		__builtin_memcpy(f->saddr, &ip4->saddr, 4);
		__builtin_memcpy(f->daddr, &ip4->daddr, 4);
		/* Later fragments carry no L4 header: judged on addresses. */
		if (ip4->frag_off & bpf_htons(0x1fff)) {
			f->protocol = proto;
			return 0;
		}
		l4 = (void *)ip4 + ip4->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		/* Link-scope multicast (MLD reports, router solicitations) never
		 * leaves the veth: link control, like neighbour discovery. */
		if (ip6->daddr.in6_u.u6_addr8[0] == 0xff && (ip6->daddr.in6_u.u6_addr8[1] & 0x0f) == 0x02)
			return 1;
		f->family = FAMILY_IPV6;
		proto = ip6->nexthdr;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		l4 = (void *)(ip6 + 1);
	} else {
		return 1;
	}
	f->protocol = proto;

	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return -1;
		f->sport = ports[0];
		f->dport = ports[1];
		f->policy_port = ports[1];
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > data_end)
			return -1;
		__u8 type = icmp[0];
		__be16 id = *(__be16 *)(icmp + 4);
		if (proto == IPPROTO_ICMPV6_ && type >= 133 && type <= 137)
			return 1; /* neighbour discovery keeps the link working */
		f->policy_port = bpf_htons(type);
		/* Echo requests and replies are one flow keyed by the id. */
		if (type == ICMP_ECHO_ || type == ICMPV6_ECHO_REQUEST_) {
			if ((proto == IPPROTO_ICMP) == (type == ICMP_ECHO_))
				f->sport = id;
		} else if (type == ICMP_ECHOREPLY_ || type == ICMPV6_ECHO_REPLY_) {
			if ((proto == IPPROTO_ICMP) == (type == ICMP_ECHOREPLY_))
				f->dport = id;
		}
		break;
	}
	}
	return 0;
}

static __always_inline __u32 lookup_identity(struct flow *f, __u8 *addr)
{
	struct ipcache_key k = {};
	k.family = f->family;
	if (f->family == FAMILY_IPV4) {
		k.prefixlen = 32 + 32;
		__builtin_memcpy(k.addr, addr, 4);
	} else {
		k.prefixlen = 32 + 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	struct ipcache_value *v = bpf_map_lookup_elem(&mb_ipcache, &k);
	if (v)
		return v->identity;
	/* Outside every known prefix: the world of the packet's family, so
	 * policy can tell world-ipv4 from world-ipv6 (entity world is both). */
	return f->family == FAMILY_IPV4 ? IDENTITY_WORLD_IPV4 : IDENTITY_WORLD_IPV6;
}

static __always_inline void count(__u16 ep, __u8 dir, __u8 reason, __u32 len)
{
	struct metrics_key k = { .endpoint_id = ep, .dir = dir, .reason = reason };
	struct metrics_value *v = bpf_map_lookup_elem(&mb_metrics, &k);
	if (v) {
		v->packets++;
		v->bytes += len;
		return;
	}
	struct metrics_value n = { .packets = 1, .bytes = len };
	bpf_map_update_elem(&mb_metrics, &k, &n, BPF_NOEXIST);
}

static __always_inline void emit(struct __sk_buff *skb, __u8 type, __u16 ep, __u8 dir, __u8 reason,
				 struct flow *f, __u32 src_id, __u32 dst_id)
{
	struct event *e = bpf_ringbuf_reserve(&mb_events, sizeof(*e), 0);
	if (!e) {
		/* The reader fell behind: say so where operators look. */
		count(ep, dir, REASON_EVENT_LOST, 0);
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
	e->ifindex = skb->ifindex;
	e->endpoint_id = ep;
	e->dir = dir;
	e->reason = reason;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	__builtin_memcpy(e->saddr, f->saddr, 16);
	__builtin_memcpy(e->daddr, f->daddr, 16);
	e->sport = f->sport;
	e->dport = f->policy_port;
	e->protocol = f->protocol;
	e->family = f->family;
	e->type = type;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/* ct_key_of fills k with the flow as seen in direction dir. */
static __always_inline void ct_key_of(struct ct_key *k, struct flow *f, __u8 dir)
{
	__builtin_memcpy(k->saddr, f->saddr, 16);
	__builtin_memcpy(k->daddr, f->daddr, 16);
	k->sport = f->sport;
	k->dport = f->dport;
	k->protocol = f->protocol;
	k->family = f->family;
	k->dir = dir;
}

static __always_inline int ct_lookup(struct flow *f, __u8 dir, __u64 now)
{
	struct ct_key k = {};
	__u64 lifetime = f->protocol == IPPROTO_TCP ? CT_LIFETIME_TCP_NS : CT_LIFETIME_OTHER_NS;

	/* The same flow seen before at this point. */
	ct_key_of(&k, f, dir);
	struct ct_value *v = bpf_map_lookup_elem(&mb_conntrack, &k);
	if (v && now - v->last_seen < lifetime) {
		v->last_seen = now;
		return 1;
	}
	/* A reply: the reverse flow was allowed in the other direction of the
	 * same endpoint. */
	__builtin_memcpy(k.saddr, f->daddr, 16);
	__builtin_memcpy(k.daddr, f->saddr, 16);
	k.sport = f->dport;
	k.dport = f->sport;
	k.dir = dir ^ 1;
	v = bpf_map_lookup_elem(&mb_conntrack, &k);
	if (v && now - v->last_seen < lifetime) {
		v->last_seen = now;
		return 1;
	}
	return 0;
}

static __always_inline void ct_create(struct flow *f, __u8 dir, __u16 ep, __u64 now)
{
	struct ct_key k = {};
	ct_key_of(&k, f, dir);
	struct ct_value v = { .last_seen = now, .endpoint_id = ep };
	bpf_map_update_elem(&mb_conntrack, &k, &v, BPF_ANY);
}

/* policy_verdict looks up the peer's identity and the wildcard; a deny in
 * either wins, then an allow in either; 0 if neither matched. */
static __always_inline int policy_verdict(__u16 ep, __u8 dir, __u32 peer, struct flow *f)
{
	struct policy_key k = {
		.prefixlen = POLICY_PREFIX_FULL,
		.endpoint_id = ep,
		.direction = dir,
		.identity = peer,
		.protocol = f->protocol,
		.dport = f->policy_port,
	};
	struct policy_value *exact = bpf_map_lookup_elem(&mb_policy, &k);
	k.identity = IDENTITY_ANY;
	struct policy_value *any = bpf_map_lookup_elem(&mb_policy, &k);

	if ((exact && (exact->flags & POLICY_F_DENY)) || (any && (any->flags & POLICY_F_DENY)))
		return REASON_DROP_POLICY_DENY;
	if (exact || any)
		return REASON_FORWARDED_POLICY;
	return 0;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct endpoint_key ek = { .ifindex = skb->ifindex };
	struct endpoint_info *ep = bpf_map_lookup_elem(&mb_endpoints, &ek);
	struct flow f = {};
	__u32 src_id, dst_id, peer;
	__u16 ep_id;
	int reason, ret;

	if (!ep) {
		/* Fail closed: a veth we are attached to but know nothing of. */
		count(0, dir, REASON_DROP_NO_ENDPOINT, skb->len);
		return TC_ACT_SHOT;
	}
	ep_id = ep->endpoint_id;

	ret = parse(skb, &f);
	if (ret > 0) {
		count(ep_id, dir, REASON_FORWARDED_NOT_IP, skb->len);
		return TC_ACT_OK;
	}
	if (ret < 0) {
		count(ep_id, dir, REASON_DROP_MALFORMED, skb->len);
		emit(skb, EVENT_DROP, ep_id, dir, REASON_DROP_MALFORMED, &f, 0, 0);
		return TC_ACT_SHOT;
	}

	if (dir == DIR_EGRESS) {
		/* Anti-spoofing: a pod sends only from its own addresses. */
		int ok;
		if (f.family == FAMILY_IPV4)
			ok = (ep->flags & EP_F_HAS_IPV4) && *(__u32 *)ep->ipv4 == *(__u32 *)f.saddr;
		else
			ok = (ep->flags & EP_F_HAS_IPV6) &&
			     *(__u64 *)ep->ipv6 == *(__u64 *)f.saddr &&
			     *(__u64 *)(ep->ipv6 + 8) == *(__u64 *)(f.saddr + 8);
		if (!ok) {
			src_id = lookup_identity(&f, f.saddr);
			count(ep_id, dir, REASON_DROP_SPOOFED, skb->len);
			emit(skb, EVENT_DROP, ep_id, dir, REASON_DROP_SPOOFED, &f, src_id, 0);
			return TC_ACT_SHOT;
		}
	}

	/* Established flows first: most packets are, and they need neither
	 * the peer's identity (an LPM lookup) nor the policy. */
	__u64 now = bpf_ktime_get_ns();
	if (ct_lookup(&f, dir, now)) {
		count(ep_id, dir, REASON_FORWARDED_CT, skb->len);
		return TC_ACT_OK;
	}

	if (dir == DIR_EGRESS) {
		src_id = ep->identity;
		dst_id = lookup_identity(&f, f.daddr);
		peer = dst_id;
	} else {
		src_id = lookup_identity(&f, f.saddr);
		dst_id = ep->identity;
		peer = src_id;
	}

	reason = policy_verdict(ep_id, dir, peer, &f);
	if (!reason) {
		__u16 enforced = dir == DIR_EGRESS ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED;
		reason = (ep->flags & enforced) ? REASON_DROP_POLICY : REASON_FORWARDED_UNENFORCED;
	}
	count(ep_id, dir, reason, skb->len);
	if (reason >= REASON_DROP_POLICY) {
		emit(skb, EVENT_DROP, ep_id, dir, reason, &f, src_id, dst_id);
		return TC_ACT_SHOT;
	}
	ct_create(&f, dir, ep_id, now);
	emit(skb, EVENT_VERDICT, ep_id, dir, reason, &f, src_id, dst_id);
	return TC_ACT_OK;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}
