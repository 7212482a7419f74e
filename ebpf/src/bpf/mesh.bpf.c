/* The routing mesh in tc: a connection to a published port on one of the node's
 * addresses is translated to one of the service's tasks on ingress (DNAT, and SNAT to the
 * node's ingress address when the task runs on another node), and its replies are
 * translated back on their way out of the ingress bridge. `shoal_mesh_in` runs at tcx
 * ingress of the node's underlay devices, `shoal_mesh_out` at tcx egress of the ingress
 * bridge (SNAT for tasks on other nodes), `shoal_mesh_reply` at its tcx ingress. Flows are remembered in LRU maps, so a published port keeps its backend for the
 * life of the connection whatever the maps are changed to. New connections from the
 * underlay straight at a task's ingress address are dropped: tasks are reachable from
 * outside only through published ports. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "shoal_mesh.h"

#include "mesh_maps.h"

/* Flows as they arrive from the underlay -> where they were sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct shoal_mesh_flow);
	__type(value, struct shoal_mesh_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_ct SEC(".maps");

/* Flows to a task on another node, as they leave by the ingress bridge -> the source
 * they get (the node's ingress address). SNAT happens there, after routing: done at
 * ingress, the node would drop the packet for carrying one of its own addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct shoal_mesh_flow);
	__type(value, struct shoal_mesh_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_snat SEC(".maps");

/* Replies as they leave the backend -> how to show them to the client. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct shoal_mesh_flow);
	__type(value, struct shoal_mesh_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_rev SEC(".maps");

#define IP_OFF ETH_HLEN
#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))

/* The parts of a packet the mesh reads; false for anything it leaves alone. */
struct parsed {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 syn_only;
	__u8 udp_csum_zero;
};

static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	/* Options and fragments go to the kernel untouched. */
	if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return 0;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->syn_only = 0;
	p->udp_csum_zero = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *t = (void *)(ip + 1);
		if ((void *)(t + 1) > end)
			return 0;
		p->sport = t->source;
		p->dport = t->dest;
		p->syn_only = t->syn && !t->ack;
		return 1;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *u = (void *)(ip + 1);
		if ((void *)(u + 1) > end)
			return 0;
		p->sport = u->source;
		p->dport = u->dest;
		p->udp_csum_zero = u->check == 0;
		return 1;
	}
	return 0;
}

static __always_inline __u32 l4_csum_off(const struct parsed *p)
{
	return L4_OFF + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						 : offsetof(struct udphdr, check));
}

/* Rewrites a 4-byte address (saddr or daddr) and fixes both checksums. */
static __always_inline int set_addr(struct __sk_buff *skb, const struct parsed *p, __u32 off,
				    __u32 old, __u32 new)
{
	if (old == new)
		return 0;
	if (!p->udp_csum_zero &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), old, new, BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &new, 4, 0);
}

/* Rewrites the source (sport) or destination (dport) port. */
static __always_inline int set_port(struct __sk_buff *skb, const struct parsed *p, int dst,
				    __u16 old, __u16 new)
{
	if (old == new)
		return 0;
	if (!p->udp_csum_zero && bpf_l4_csum_replace(skb, l4_csum_off(p), old, new, 2))
		return -1;
	/* Source and destination ports lead both TCP and UDP headers. */
	return bpf_skb_store_bytes(skb, L4_OFF + (dst ? 2 : 0), &new, 2, 0);
}

/* Whether the backend a remembered flow was sent to is still in its slot of the port. */
static __always_inline int still_current(const struct shoal_mesh_nat *nat, __u8 proto,
					 __u16 port)
{
	if (nat->slot == SHOAL_SLOT_UNKNOWN)
		return 1;
	struct shoal_mesh_backend_key bk = { .proto = proto, .port = port, .slot = nat->slot };
	struct shoal_mesh_backend *b = bpf_map_lookup_elem(&shoal_mesh_backends, &bk);
	return b && b->addr == nat->addr && b->port == nat->port;
}

SEC("classifier")
int shoal_mesh_in(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse(skb, &p))
		return TC_ACT_OK;
	__u32 zero = 0;
	struct shoal_mesh_cfg *cfg = bpf_map_lookup_elem(&shoal_mesh_cfg, &zero);
	if (!cfg)
		return TC_ACT_OK;
	/* The guard: a new flow from the underlay straight at a task. */
	if (cfg->ingress_mask && (p.daddr & cfg->ingress_mask) == cfg->ingress_net &&
	    (p.proto == IPPROTO_UDP || p.syn_only))
		return TC_ACT_SHOT;
	if (!bpf_map_lookup_elem(&shoal_mesh_local, &p.daddr))
		return TC_ACT_OK;
	struct shoal_mesh_flow flow = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport,
		.proto = p.proto,
	};
	struct shoal_mesh_nat nat;
	struct shoal_mesh_nat *known = bpf_map_lookup_elem(&shoal_mesh_ct, &flow);
	/* A new connection on a tuple seen before (client ports come round again) is
	 * balanced anew unless its remembered backend is still the port's: the old one may
	 * be a task that is gone. A retransmitted SYN finds its backend current and stays. */
	if (known && p.syn_only && !still_current(known, p.proto, p.dport))
		known = 0;
	if (known) {
		nat = *known;
	} else {
		struct shoal_mesh_port_key pk = { .proto = p.proto, .port = p.dport };
		struct shoal_mesh_port *port = bpf_map_lookup_elem(&shoal_mesh_ports, &pk);
		/* Not published (or no task): the node's own stack answers, or refuses. */
		if (!port)
			return TC_ACT_OK;
		/* Read once: shoald may change them meanwhile. */
		__u32 count = *(volatile __u32 *)&port->count;
		__u32 aff_s = *(volatile __u32 *)&port->affinity_s;
		if (count == 0)
			return TC_ACT_OK;
		__u32 slot;
		struct shoal_mesh_backend *b = shoal_mesh_pick(&pk, count, aff_s, p.saddr, &slot);
		if (!b)
			return TC_ACT_OK;
		nat.addr = b->addr;
		nat.port = b->port;
		nat.snat = b->local ? 0 : 1;
		nat.slot = slot < SHOAL_SLOT_UNKNOWN ? (__u8)slot : SHOAL_SLOT_UNKNOWN;
		nat.node = p.daddr;
		nat.client = p.saddr;
		if (nat.snat && !cfg->snat_addr)
			return TC_ACT_SHOT;
		bpf_map_update_elem(&shoal_mesh_ct, &flow, &nat, BPF_ANY);
		struct shoal_mesh_flow reply = {
			.saddr = nat.addr, .daddr = nat.snat ? cfg->snat_addr : p.saddr,
			.sport = nat.port, .dport = p.sport, .proto = p.proto,
		};
		struct shoal_mesh_nat back = {
			.addr = p.daddr, .port = p.dport, .node = p.daddr, .client = p.saddr,
		};
		bpf_map_update_elem(&shoal_mesh_rev, &reply, &back, BPF_ANY);
		if (nat.snat) {
			struct shoal_mesh_flow out = {
				.saddr = p.saddr, .daddr = nat.addr, .sport = p.sport,
				.dport = nat.port, .proto = p.proto,
			};
			struct shoal_mesh_nat src = { .addr = cfg->snat_addr };
			bpf_map_update_elem(&shoal_mesh_snat, &out, &src, BPF_ANY);
		}
	}
	if (set_addr(skb, &p, IP_DST_OFF, p.daddr, nat.addr) ||
	    set_port(skb, &p, 1, p.dport, nat.port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("classifier")
int shoal_mesh_out(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse(skb, &p))
		return TC_ACT_OK;
	struct shoal_mesh_flow flow = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport,
		.proto = p.proto,
	};
	struct shoal_mesh_nat *src = bpf_map_lookup_elem(&shoal_mesh_snat, &flow);
	if (!src)
		return TC_ACT_OK;
	__u32 to = src->addr;
	if (set_addr(skb, &p, IP_SRC_OFF, p.saddr, to))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("classifier")
int shoal_mesh_reply(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse(skb, &p))
		return TC_ACT_OK;
	struct shoal_mesh_flow flow = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport,
		.proto = p.proto,
	};
	struct shoal_mesh_nat *back = bpf_map_lookup_elem(&shoal_mesh_rev, &flow);
	if (!back)
		return TC_ACT_OK;
	struct shoal_mesh_nat b = *back;
	/* From the published port on the node's address, to the client. */
	if (set_addr(skb, &p, IP_SRC_OFF, p.saddr, b.node) ||
	    set_port(skb, &p, 0, p.sport, b.port) ||
	    set_addr(skb, &p, IP_DST_OFF, p.daddr, b.client))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Apache-2.0";
