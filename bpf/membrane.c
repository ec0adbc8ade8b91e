//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* Membrane's datapath: two programs attached to the host side of every
 * endpoint's veth.
 *
 *   from_container (tcx ingress): packets the pod sends. Source-address
 *     anti-spoofing, then the pod's egress policy.
 *   to_container (tcx egress): packets for the pod. Its ingress policy.
 *
 * With eBPF host routing (host_routing, --host-routing=bpf) from_container
 * also judges a packet bound for another endpoint of this node by that
 * endpoint's ingress policy, as to_container would, and hands it straight
 * into the destination pod's netns (bpf_redirect_peer), past the host's
 * IP stack.
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

/* Set by the loader before it loads the object (constant rewriting): 1 for
 * --host-routing=bpf. A constant, so the verifier drops the host routing
 * code from the legacy datapath altogether: one object serves both. */
volatile const __u32 host_routing = 0;

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
	REASON_DROP_FRAG_NO_FIRST = 15,  /* later fragment, no allowed first one */
	REASON_DROP_FRAG_TOO_SHORT = 16, /* first fragment without whole L4 header */
	REASON_DROP_IPV6_EXT = 17,       /* IPv6 extension headers beyond the bound */
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

/* What conntrack found for a packet at one enforcement point. */
enum ct_match {
	CT_NEW = 0,   /* no live entry: policy decides */
	CT_SAME = 1,  /* the flow, seen before in this direction */
	CT_REPLY = 2, /* the reply of a flow allowed in the other direction */
};

#define CT_LIFETIME_TCP_NS (6ULL * 3600 * 1000000000ULL)
#define CT_LIFETIME_OTHER_NS (60ULL * 1000000000ULL)

#define IPPROTO_ICMPV6_ 58
#define ICMP_ECHO_ 8
#define ICMP_ECHOREPLY_ 0
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129

/* A packet's place in a fragmented datagram. */
enum frag_kind {
	FRAG_NONE = 0,  /* not fragmented (or an IPv6 atomic fragment) */
	FRAG_FIRST = 1, /* offset 0, more to come: carries the L4 header */
	FRAG_LATER = 2, /* offset > 0: no L4 header */
};

struct flow {
	__u8 family;
	__u8 protocol;
	__be16 sport; /* CT ports: TCP/UDP/SCTP ports, ICMP echo id */
	__be16 dport;
	__be16 policy_port; /* port the policy matches: dport, ICMP type */
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 frag;     /* enum frag_kind */
	__be32 frag_id; /* IPv4 ID (low 16 bits) or IPv6 fragment ID */
	__u8 ct;        /* enum ct_match of the last judgment */
};

#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1fff

/* IPv6 extension headers parse walks through, at most IPV6_MAX_EXT of
 * them: a chain longer than that drops (ipv6-ext-headers) rather than
 * being judged on a header that is not the L4 one. */
#define IPV6_MAX_EXT 8
#define NEXTHDR_HOP_ 0
#define NEXTHDR_ROUTING_ 43
#define NEXTHDR_FRAGMENT_ 44
#define NEXTHDR_AUTH_ 51
#define NEXTHDR_DEST_ 60

/* l4_min is the L4 header a first fragment must carry whole: a shorter one
 * (the tiny-fragment attack, RFC 1858) would leave the ports, the type or
 * the TCP flags to a later fragment that policy cannot see into. */
static __always_inline __u32 l4_min(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 20;
	case IPPROTO_SCTP:
		return 12;
	case IPPROTO_UDP:
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		return 8;
	}
	return 0;
}

/* ipv6_ext walks the extension headers from *off (just after the fixed
 * header) with *proto the fixed header's next header, leaving *off at the
 * L4 header and *proto its protocol, and filling the fragment fields of f
 * from a fragment header. Returns 0, or a drop reason. */
static __always_inline int ipv6_ext(struct __sk_buff *skb, struct flow *f, __u32 *off, __u8 *proto)
{
	__u8 hdr[8];
	int i;

#pragma unroll
	for (i = 0; i < IPV6_MAX_EXT; i++) {
		switch (*proto) {
		case NEXTHDR_HOP_:
		case NEXTHDR_ROUTING_:
		case NEXTHDR_DEST_:
		case NEXTHDR_AUTH_:
			if (bpf_skb_load_bytes(skb, *off, hdr, 2) < 0)
				return REASON_DROP_MALFORMED;
			/* Hop-by-hop only right after the fixed header. */
			if (*proto == NEXTHDR_HOP_ && i != 0)
				return REASON_DROP_IPV6_EXT;
			/* AH counts 4-byte units minus 2, the others 8-byte
			 * units minus 1. */
			*off += *proto == NEXTHDR_AUTH_ ? ((__u32)hdr[1] + 2) * 4 : ((__u32)hdr[1] + 1) * 8;
			*proto = hdr[0];
			break;
		case NEXTHDR_FRAGMENT_: {
			if (f->frag != FRAG_NONE)
				return REASON_DROP_IPV6_EXT; /* a second one */
			if (bpf_skb_load_bytes(skb, *off, hdr, 8) < 0)
				return REASON_DROP_MALFORMED;
			__u16 fo = ((__u16)hdr[2] << 8) | hdr[3];
			*off += 8;
			*proto = hdr[0];
			__builtin_memcpy(&f->frag_id, hdr + 4, 4);
			if (fo & 0xfff8) {
				f->frag = FRAG_LATER;
				return 0; /* what follows is payload, not headers */
			}
			/* Offset 0 without M is an atomic fragment (RFC 6946): a
			 * whole datagram. */
			f->frag = (fo & 1) ? FRAG_FIRST : FRAG_NONE;
			break;
		}
		default:
			return 0;
		}
	}
	switch (*proto) {
	case NEXTHDR_HOP_:
	case NEXTHDR_ROUTING_:
	case NEXTHDR_DEST_:
	case NEXTHDR_AUTH_:
	case NEXTHDR_FRAGMENT_:
		return REASON_DROP_IPV6_EXT;
	}
	return 0;
}

/* parse fills f from the packet. Returns 1 for a packet policy does not
 * apply to (not IP, neighbour discovery), 0 for an IP packet, or minus
 * the reason to drop it: malformed, a tiny first fragment, IPv6 extension
 * headers beyond the bound. A later fragment returns 0 without ports:
 * handle() takes them from its first fragment. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 off, end;
	__u8 proto;

	if ((void *)(eth + 1) > data_end)
		return -REASON_DROP_MALFORMED;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);
		if ((void *)(ip4 + 1) > data_end || ip4->ihl < 5)
			return -REASON_DROP_MALFORMED;
		f->family = FAMILY_IPV4;
		proto = ip4->protocol;
		__builtin_memcpy(f->saddr, &ip4->saddr, 4);
		__builtin_memcpy(f->daddr, &ip4->daddr, 4);
		off = sizeof(*eth) + ip4->ihl * 4;
		end = sizeof(*eth) + bpf_ntohs(ip4->tot_len);
		if (ip4->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)) {
			f->frag_id = (__be32)ip4->id;
			/* Later fragments carry no L4 header. */
			f->frag = (ip4->frag_off & bpf_htons(IP_OFFSET_)) ? FRAG_LATER : FRAG_FIRST;
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		int r;
		if ((void *)(ip6 + 1) > data_end)
			return -REASON_DROP_MALFORMED;
		/* Link-scope multicast (MLD reports, router solicitations) never
		 * leaves the veth: link control, like neighbour discovery. */
		if (ip6->daddr.in6_u.u6_addr8[0] == 0xff && (ip6->daddr.in6_u.u6_addr8[1] & 0x0f) == 0x02)
			return 1;
		f->family = FAMILY_IPV6;
		proto = ip6->nexthdr;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		off = sizeof(*eth) + sizeof(*ip6);
		end = off + bpf_ntohs(ip6->payload_len);
		r = ipv6_ext(skb, f, &off, &proto);
		if (r) {
			f->protocol = proto;
			return -r;
		}
	} else {
		return 1;
	}
	f->protocol = proto;
	if (f->frag == FRAG_LATER)
		return 0;
	/* A first fragment must hold the whole L4 header. */
	if (f->frag == FRAG_FIRST && (end < off || end - off < l4_min(proto)))
		return -REASON_DROP_FRAG_TOO_SHORT;

	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return -REASON_DROP_MALFORMED;
		f->sport = ports[0];
		f->dport = ports[1];
		f->policy_port = ports[1];
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		__u8 icmp[8];
		if (bpf_skb_load_bytes(skb, off, icmp, sizeof(icmp)) < 0)
			return -REASON_DROP_MALFORMED;
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

static __always_inline struct ipcache_value *ipcache_lookup(struct flow *f, __u8 *addr)
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
	return bpf_map_lookup_elem(&mb_ipcache, &k);
}

static __always_inline __u32 lookup_identity(struct flow *f, __u8 *addr)
{
	struct ipcache_value *v = ipcache_lookup(f, addr);
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

static __always_inline void emit(__u32 ifindex, __u8 type, __u16 ep, __u8 dir, __u8 reason,
				 struct flow *f, __u32 src_id, __u32 dst_id)
{
	struct event *e = bpf_ringbuf_reserve(&mb_events, sizeof(*e), 0);
	if (!e) {
		/* The reader fell behind: say so where operators look. */
		count(ep, dir, REASON_EVENT_LOST, 0);
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
	e->ifindex = ifindex;
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

/* ct_key_fill fills k with a flow at one point, in direction dir. */
static __always_inline void ct_key_fill(struct ct_key *k, struct flow *f, __u8 *saddr, __u8 *daddr, __be16 sport,
					__be16 dport, __u8 dir)
{
	__builtin_memcpy(k->saddr, saddr, 16);
	__builtin_memcpy(k->daddr, daddr, 16);
	k->sport = sport;
	k->dport = dport;
	k->protocol = f->protocol;
	k->family = f->family;
	k->dir = dir;
}

/* ct_key_of fills k with the flow as seen in direction dir or, for reply,
 * with its reverse in the other direction: the key its reply finds. */
static __always_inline void ct_key_of(struct ct_key *k, struct flow *f, __u8 dir, int reply)
{
	if (reply)
		ct_key_fill(k, f, f->daddr, f->saddr, f->dport, f->sport, dir ^ 1);
	else
		ct_key_fill(k, f, f->saddr, f->daddr, f->sport, f->dport, dir);
}

/* ct_live refreshes the entry of k and reports it, if it was seen within
 * lifetime. Signed: an entry stamped on another CPU after now was read is
 * fresh, not 2^64 ns old. */
static __always_inline int ct_live(struct ct_key *k, __u64 now, __u64 lifetime)
{
	struct ct_value *v = bpf_map_lookup_elem(&mb_conntrack, k);
	if (!v || (__s64)(now - v->last_seen) >= (__s64)lifetime)
		return 0;
	v->last_seen = now;
	return 1;
}

/* ct_lookup finds the flow established at this point: the same flow seen
 * before (CT_SAME), or the reverse flow allowed in the other direction of
 * the same endpoint, whose reply this is (CT_REPLY). Which key is looked
 * up first changes only the cost: reply_first when the packet is likely a
 * reply. */
static __always_inline int ct_lookup(struct flow *f, __u8 dir, __u64 now, int reply_first)
{
	struct ct_key k = {};
	__u64 lifetime = f->protocol == IPPROTO_TCP ? CT_LIFETIME_TCP_NS : CT_LIFETIME_OTHER_NS;

	ct_key_of(&k, f, dir, reply_first);
	if (ct_live(&k, now, lifetime))
		return reply_first ? CT_REPLY : CT_SAME;
	ct_key_of(&k, f, dir, !reply_first);
	if (ct_live(&k, now, lifetime))
		return reply_first ? CT_SAME : CT_REPLY;
	return CT_NEW;
}

static __always_inline void ct_create(struct flow *f, __u8 dir, __u16 ep, __u64 now)
{
	struct ct_key k = {};
	ct_key_of(&k, f, dir, 0);
	struct ct_value v = { .last_seen = now, .endpoint_id = ep };
	bpf_map_update_elem(&mb_conntrack, &k, &v, BPF_ANY);
}

/* Fragments of a datagram still in flight after this long are not
 * honoured: the kernel gives up reassembly sooner (ipfrag_time, 30 s for
 * IPv4 and 60 s for IPv6 by default). The IPv4 ID wraps; a stale entry must
 * not pass a new datagram's fragments on old ports. */
#define FRAG_LIFETIME_NS (60ULL * 1000000000ULL)

static __always_inline void frag_key_of(struct frag_key *k, struct flow *f, __u16 ep, __u8 dir)
{
	__builtin_memcpy(k->saddr, f->saddr, 16);
	__builtin_memcpy(k->daddr, f->daddr, 16);
	k->id = f->frag_id;
	k->endpoint_id = ep;
	k->protocol = f->protocol;
	k->family = f->family;
	k->dir = dir;
}

/* frag_allow remembers that the first fragment of k passed with reason,
 * on f's ports. A first fragment seen again (overlap, retransmission)
 * replaces the entry: every first fragment is judged on its own ports. */
static __always_inline void frag_allow(struct frag_key *k, struct flow *f, __u8 reason, __u64 now)
{
	struct frag_value v = {
		.last_seen = now,
		.sport = f->sport,
		.dport = f->dport,
		.policy_port = f->policy_port,
		.reason = reason,
	};
	bpf_map_update_elem(&mb_fragments, k, &v, BPF_ANY);
}

/* frag_lookup gives a later fragment its first fragment's ports and
 * returns the reason that one passed with; 0 if no first fragment passed
 * (not seen, denied, or too long ago). */
static __always_inline int frag_lookup(struct frag_key *k, struct flow *f, __u64 now)
{
	struct frag_value *v = bpf_map_lookup_elem(&mb_fragments, k);
	/* Signed: a first fragment seen again on another CPU since now was
	 * read is fresh, not 2^64 ns old. */
	if (!v || (__s64)(now - v->last_seen) >= (__s64)FRAG_LIFETIME_NS)
		return 0;
	f->sport = v->sport;
	f->dport = v->dport;
	f->policy_port = v->policy_port;
	return v->reason;
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

/* owns reports whether addr (of f's family) is one of ep's addresses. */
static __always_inline int owns(struct endpoint_info *ep, struct flow *f, __u8 *addr)
{
	if (f->family == FAMILY_IPV4)
		return (ep->flags & EP_F_HAS_IPV4) && *(__u32 *)ep->ipv4 == *(__u32 *)addr;
	return (ep->flags & EP_F_HAS_IPV6) && *(__u64 *)ep->ipv6 == *(__u64 *)addr &&
	       *(__u64 *)(ep->ipv6 + 8) == *(__u64 *)(addr + 8);
}

/* judge gives the verdict of one enforcement point, endpoint ep in
 * direction dir, on the parsed IP packet f, seen on the host veth ifindex:
 * anti-spoofing (egress), fragments, conntrack, policy, with their
 * counters and events. TC_ACT_OK or TC_ACT_SHOT. */
static __always_inline int judge(struct __sk_buff *skb, struct endpoint_info *ep, __u32 ifindex, __u8 dir,
				 struct flow *f, __u64 now)
{
	__u16 ep_id = ep->endpoint_id;
	__u32 src_id, dst_id, peer;
	int reason;

	if (dir == DIR_EGRESS) {
		/* Anti-spoofing: a pod sends only from its own addresses. */
		if (!owns(ep, f, f->saddr)) {
			src_id = lookup_identity(f, f->saddr);
			count(ep_id, dir, REASON_DROP_SPOOFED, skb->len);
			emit(ifindex, EVENT_DROP, ep_id, dir, REASON_DROP_SPOOFED, f, src_id, 0);
			return TC_ACT_SHOT;
		}
	}

	struct frag_key fk = {};
	if (f->frag != FRAG_NONE)
		frag_key_of(&fk, f, ep_id, dir);

	/* A later fragment has the verdict of its first fragment, or none. */
	if (f->frag == FRAG_LATER) {
		reason = frag_lookup(&fk, f, now);
		if (!reason) {
			reason = REASON_DROP_FRAG_NO_FIRST;
			count(ep_id, dir, reason, skb->len);
			emit(ifindex, EVENT_DROP, ep_id, dir, reason, f, 0, 0);
			return TC_ACT_SHOT;
		}
		count(ep_id, dir, reason, skb->len);
		return TC_ACT_OK;
	}

	/* Established flows first: most packets are, and they need neither
	 * the peer's identity (an LPM lookup) nor the policy. Which key first:
	 * a packet the other end of host routing found to be a reply is one
	 * here too; else one from a lower port to a higher one likely is (a
	 * server answering from its port to a client's ephemeral one; an echo
	 * reply has its id as the destination). */
	int reply_first = f->ct != CT_NEW ? f->ct == CT_REPLY : bpf_ntohs(f->sport) < bpf_ntohs(f->dport);
	f->ct = ct_lookup(f, dir, now, reply_first);
	if (f->ct != CT_NEW) {
		if (f->frag == FRAG_FIRST)
			frag_allow(&fk, f, REASON_FORWARDED_CT, now);
		count(ep_id, dir, REASON_FORWARDED_CT, skb->len);
		return TC_ACT_OK;
	}

	if (dir == DIR_EGRESS) {
		src_id = ep->identity;
		dst_id = lookup_identity(f, f->daddr);
		peer = dst_id;
	} else {
		src_id = lookup_identity(f, f->saddr);
		dst_id = ep->identity;
		peer = src_id;
	}

	reason = policy_verdict(ep_id, dir, peer, f);
	if (!reason) {
		__u16 enforced = dir == DIR_EGRESS ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED;
		reason = (ep->flags & enforced) ? REASON_DROP_POLICY : REASON_FORWARDED_UNENFORCED;
	}
	count(ep_id, dir, reason, skb->len);
	if (reason >= REASON_DROP_POLICY) {
		/* Whatever an earlier first fragment of this ID left, nothing
		 * of this datagram may follow. */
		if (f->frag == FRAG_FIRST)
			bpf_map_delete_elem(&mb_fragments, &fk);
		emit(ifindex, EVENT_DROP, ep_id, dir, reason, f, src_id, dst_id);
		return TC_ACT_SHOT;
	}
	if (f->frag == FRAG_FIRST)
		frag_allow(&fk, f, reason, now);
	ct_create(f, dir, ep_id, now);
	emit(ifindex, EVENT_VERDICT, ep_id, dir, reason, f, src_id, dst_id);
	return TC_ACT_OK;
}

/* handle judges a packet on the veth it is on, for that veth's endpoint,
 * leaving the parsed packet in f. f->family is 0 for a packet no policy
 * applies to (not IP, neighbour discovery): it is the stack's. */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir, struct flow *f, __u64 now)
{
	struct endpoint_key ek = { .ifindex = skb->ifindex };
	struct endpoint_info *ep = bpf_map_lookup_elem(&mb_endpoints, &ek);
	int ret;

	if (!ep) {
		/* Fail closed: a veth we are attached to but know nothing of. */
		count(0, dir, REASON_DROP_NO_ENDPOINT, skb->len);
		return TC_ACT_SHOT;
	}

	ret = parse(skb, f);
	if (ret > 0) {
		f->family = 0;
		count(ep->endpoint_id, dir, REASON_FORWARDED_NOT_IP, skb->len);
		return TC_ACT_OK;
	}
	if (ret < 0) {
		count(ep->endpoint_id, dir, -ret, skb->len);
		emit(skb->ifindex, EVENT_DROP, ep->endpoint_id, dir, -ret, f, 0, 0);
		return TC_ACT_SHOT;
	}
	return judge(skb, ep, skb->ifindex, dir, f, now);
}

static __always_inline int mac_set(__u8 *mac)
{
	return (*(__u32 *)mac | *(__u16 *)(mac + 4)) != 0;
}

/* csum_replace16 is the IPv4 header checksum check with one 16-bit word
 * changed from old to new (RFC 1624, eqn. 3); network-order words in and
 * out, the one's complement sum does not care. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u32)(__u16)~old + new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* route_local is eBPF host routing, for a packet from_container has let
 * out of its pod: if it is bound for another endpoint of this node, it is
 * judged here by that endpoint's ingress policy, exactly as to_container
 * would judge it on the destination veth after the stack forwarded it
 * (same conntrack entries, counters and events, the event naming the
 * destination veth), then forwarded as the stack would (MACs of the
 * destination veth, TTL or hop limit one less) straight into the
 * destination pod's netns: bpf_redirect_peer from the source veth's
 * ingress to the peer of the destination veth, which the stack's routing,
 * netfilter, neighbour output and the destination veth's qdisc never see.
 * Anything else returns TC_ACT_OK to the stack before it is judged, and
 * to_container judges it as without host routing: never twice. */
static __always_inline int route_local(struct __sk_buff *skb, struct flow *f, __u64 now)
{
	struct ipcache_value *ipc = ipcache_lookup(f, f->daddr);
	if (!ipc || !ipc->ifindex || ipc->ifindex == skb->ifindex)
		return TC_ACT_OK; /* not a local endpoint (or back where it came from) */
	__u32 ifindex = ipc->ifindex;
	struct endpoint_key ek = { .ifindex = ifindex };
	struct endpoint_info *dst = bpf_map_lookup_elem(&mb_endpoints, &ek);
	/* The entry must be the one of the destination address: an ipcache
	 * entry a moment older than a reused ifindex must not misdeliver. And
	 * without the MACs (an endpoint created without them) the stack knows
	 * better. */
	if (!dst || !owns(dst, f, f->daddr) || !mac_set(dst->mac) || !mac_set(dst->host_mac))
		return TC_ACT_OK;

	/* Make the headers to rewrite linear and writable before judging: once
	 * the packet is judged, rewriting it cannot fail. */
	__u32 l3 = sizeof(struct ethhdr);
	__u32 hlen = l3 + (f->family == FAMILY_IPV4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	if (bpf_skb_pull_data(skb, hlen) < 0)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + hlen > data_end)
		return TC_ACT_OK;
	/* An expiring TTL is the stack's: it answers with ICMP time exceeded. */
	__u8 ttl;
	if (f->family == FAMILY_IPV4)
		ttl = ((struct iphdr *)(data + l3))->ttl;
	else
		ttl = ((struct ipv6hdr *)(data + l3))->hop_limit;
	if (ttl <= 1)
		return TC_ACT_OK;

	/* The egress judgment gave a later fragment its first fragment's
	 * ports; to_container would start from a parse that has none. */
	if (f->frag == FRAG_LATER) {
		f->sport = 0;
		f->dport = 0;
		f->policy_port = 0;
	}
	if (judge(skb, dst, ifindex, DIR_INGRESS, f, now) != TC_ACT_OK)
		return TC_ACT_SHOT;

	__u8 macs[12];
	__builtin_memcpy(macs, dst->mac, 6);
	__builtin_memcpy(macs + 6, dst->host_mac, 6);
	/* The writes cannot fail (the headers are writable); if one did, the
	 * stack forwards the packet, rewriting the MACs, and to_container
	 * finds its flow established. */
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return TC_ACT_OK;
	if (f->family == FAMILY_IPV4) {
		/* TTL, protocol and checksum in one store. */
		__u16 w[2];
		if (bpf_skb_load_bytes(skb, l3 + 8, w, sizeof(w)) < 0)
			return TC_ACT_OK;
		__u16 old = w[0];
		((__u8 *)w)[0] = ttl - 1;
		w[1] = csum_replace16(w[1], old, w[0]);
		if (bpf_skb_store_bytes(skb, l3 + 8, w, sizeof(w), 0) < 0)
			return TC_ACT_OK;
	} else {
		ttl--;
		if (bpf_skb_store_bytes(skb, l3 + 7, &ttl, 1, 0) < 0)
			return TC_ACT_OK;
	}
	return bpf_redirect_peer(ifindex, 0);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct flow f = {};
	/* One clock read per packet, shared by both judgments of host
	 * routing: in a virtual machine it is not cheap. */
	__u64 now = bpf_ktime_get_ns();
	int ret = handle(skb, DIR_EGRESS, &f, now);

	if (!host_routing || ret != TC_ACT_OK || !f.family)
		return ret;
	return route_local(skb, &f, now);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct flow f = {};
	return handle(skb, DIR_INGRESS, &f, bpf_ktime_get_ns());
}
