/* Socket-level service load balancing: a connect() or sendto() to a VIP is sent straight
 * to one of its backends, so packets carry the backend's address from the first byte and
 * need no NAT and no conntrack entry; recvmsg and getpeername translate back so the
 * application sees the VIP it asked for. Attached to a cgroup v2 holding the tasks. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "shoal_lb.h"
#include "mesh_maps.h"

/* Sock_addr programs: 1 lets the call go on, 0 fails it with EPERM. */
#define PASS 1
#define REFUSE 0

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct shoal_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct shoal_backend_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct shoal_member_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_member SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct shoal_revnat_key);
	__type(value, struct shoal_revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_revnat SEC(".maps");

/* TCP sockets (and connected UDP ones) keep the VIP they asked for, with the backend they
 * were sent to, in socket storage: freed with the socket, and cheaper per connection than
 * an LRU entry. Pinned, so that programs replaced by an upgrade still find it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct shoal_sk_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_sk_vip SEC(".maps");

/* Unconnected UDP sockets keep their backend per VIP and port, as long as it stays in the
 * same slot: a multi-datagram exchange stays on one task, as conntrack keeps it under
 * nftables. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct shoal_revnat_key);
	__type(value, struct shoal_backend_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_udp_sticky SEC(".maps");

/* Session affinity of VIPs, per client namespace (see shoal_lb.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct shoal_member_key);
	__type(value, struct shoal_affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_affinity SEC(".maps");

/* Where pick() sends a socket. */
struct target {
	__u32 addr;
	__u16 port;
};

#define NOT_OURS 0
#define REWRITE 1
#define NO_BACKEND -1

/* A VIP of this namespace's networks: one of its backends, same port. */
static __always_inline int pick_vip(struct bpf_sock_addr *ctx, __u64 netns, __u32 vip,
				    __u16 port, int connected, struct target *t)
{
	struct shoal_member_key member = { .netns = netns, .vip = vip };
	if (!bpf_map_lookup_elem(&shoal_member, &member))
		return NOT_OURS;
	struct shoal_svc_value *svc = bpf_map_lookup_elem(&shoal_svc, &vip);
	if (!svc)
		return NO_BACKEND;
	/* Read once: shoald may change it meanwhile. */
	__u32 count = *(volatile __u32 *)&svc->count;
	if (count == 0)
		return NO_BACKEND;
	struct shoal_revnat_key sticky = {
		.cookie = connected ? 0 : bpf_get_socket_cookie(ctx),
		.addr = vip,
		.port = port,
	};
	/* Session affinity: the backend this namespace had, while its slot still holds it
	 * and the client came back within the timeout. */
	__u32 aff_s = *(volatile __u32 *)&svc->affinity_s;
	__u64 now = 0;
	if (aff_s) {
		now = bpf_ktime_get_ns();
		struct shoal_affinity_value *a = bpf_map_lookup_elem(&shoal_affinity, &member);
		if (a && a->slot < count && now - a->last_ns < (__u64)aff_s * 1000000000ULL) {
			struct shoal_backend_key had = { .vip = vip, .slot = a->slot };
			__u32 *b = bpf_map_lookup_elem(&shoal_backends, &had);
			if (b && *b == a->backend) {
				a->last_ns = now;
				t->addr = *b;
				t->port = port;
				return REWRITE;
			}
		}
	}
	struct shoal_backend_key slot = { .vip = vip, .slot = bpf_get_prandom_u32() % count };
	__u32 kept_slot = 0xffffffff;
	if (!connected && !aff_s) {
		struct shoal_backend_key *kept = bpf_map_lookup_elem(&shoal_udp_sticky, &sticky);
		if (kept && kept->slot < count) {
			slot.slot = kept->slot;
			kept_slot = kept->slot;
		}
	}
	__u32 *backend = bpf_map_lookup_elem(&shoal_backends, &slot);
	if (!backend) {
		/* The set shrank between the two lookups: slot 0 is filled while any is. */
		slot.slot = 0;
		backend = bpf_map_lookup_elem(&shoal_backends, &slot);
		if (!backend)
			return NO_BACKEND;
	}
	if (aff_s) {
		struct shoal_affinity_value a = { .last_ns = now, .slot = slot.slot, .backend = *backend };
		bpf_map_update_elem(&shoal_affinity, &member, &a, BPF_ANY);
	} else if (!connected && kept_slot != slot.slot) {
		bpf_map_update_elem(&shoal_udp_sticky, &sticky, &slot, BPF_ANY);
	}
	t->addr = *backend;
	t->port = port;
	return REWRITE;
}

/* A published port on one of the node's addresses, from the node's own namespace (such
 * connections never pass the tc mesh): one of the port's tasks, its target port. */
static __always_inline int pick_published(struct bpf_sock_addr *ctx, __u64 netns, __u32 addr,
					  __u16 port, struct target *t)
{
	__u32 zero = 0;
	__u64 *node = bpf_map_lookup_elem(&shoal_mesh_node, &zero);
	if (!node || *node != netns || !bpf_map_lookup_elem(&shoal_mesh_local, &addr))
		return NOT_OURS;
	struct shoal_mesh_port_key pk = { .proto = (__u8)ctx->protocol, .port = port };
	struct shoal_mesh_port *p = bpf_map_lookup_elem(&shoal_mesh_ports, &pk);
	if (!p)
		return NOT_OURS;
	__u32 count = *(volatile __u32 *)&p->count;
	__u32 aff_s = *(volatile __u32 *)&p->affinity_s;
	if (count == 0)
		return NOT_OURS;
	/* The node's own processes are one client (0) to the port's affinity. */
	__u32 slot;
	struct shoal_mesh_backend *b = shoal_mesh_pick(&pk, count, aff_s, 0, &slot);
	if (!b)
		return NOT_OURS;
	t->addr = b->addr;
	t->port = b->port;
	return REWRITE;
}

static __always_inline int pick(struct bpf_sock_addr *ctx, __u32 addr, __u16 port, int connected,
				struct target *t)
{
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return NOT_OURS;
	__u64 netns = bpf_get_netns_cookie(ctx);
	int r = pick_vip(ctx, netns, addr, port, connected, t);
	if (r != NOT_OURS)
		return r;
	return pick_published(ctx, netns, addr, port, t);
}

/* Remembers what the socket asked for, so it can be shown back. */
static __always_inline void remember(struct bpf_sock_addr *ctx, __u32 addr, __u16 port,
				     const struct target *t, int connected)
{
	if (connected) {
		struct shoal_sk_vip *sv = bpf_sk_storage_get(&shoal_sk_vip, ctx->sk, 0,
							     BPF_SK_STORAGE_GET_F_CREATE);
		if (sv) {
			sv->vip = addr;
			sv->port = port;
			sv->backend = t->addr;
			sv->backend_port = t->port;
		}
		return;
	}
	/* An unconnected UDP socket may talk to many VIPs: one entry per backend. */
	struct shoal_revnat_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = t->addr,
		.port = t->port,
	};
	struct shoal_revnat_value rv = { .vip = addr, .port = port };
	bpf_map_update_elem(&shoal_revnat, &rk, &rv, BPF_ANY);
}

/* What (addr, port) of a backend stands for on this socket; 0 when nothing. */
static __always_inline __u32 shown_as(struct bpf_sock_addr *ctx, __u32 addr, __u16 port,
				      int connected, __u16 *vport)
{
	if (connected) {
		struct shoal_sk_vip *sv = bpf_sk_storage_get(&shoal_sk_vip, ctx->sk, 0, 0);
		/* Only for the backend it was sent to: the socket may have moved on since. */
		if (sv && sv->backend == addr && sv->backend_port == port) {
			*vport = sv->port;
			return sv->vip;
		}
	}
	struct shoal_revnat_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = addr,
		.port = port,
	};
	struct shoal_revnat_value *rv = bpf_map_lookup_elem(&shoal_revnat, &rk);
	if (!rv)
		return 0;
	*vport = rv->port;
	return rv->vip;
}

static __always_inline int balance4(struct bpf_sock_addr *ctx, int connected)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	struct target t = {};
	int r = pick(ctx, addr, port, connected, &t);
	if (r == NOT_OURS)
		return PASS;
	if (r == NO_BACKEND)
		return REFUSE;
	remember(ctx, addr, port, &t, connected);
	ctx->user_ip4 = t.addr;
	/* The context's port field takes 4-byte stores only. */
	ctx->user_port = (__u32)t.port;
	return PASS;
}

static __always_inline void translate_back4(struct bpf_sock_addr *ctx, int connected)
{
	__u16 vport = 0;
	__u32 vip = shown_as(ctx, ctx->user_ip4, (__u16)ctx->user_port, connected, &vport);
	if (!vip)
		return;
	ctx->user_ip4 = vip;
	ctx->user_port = (__u32)vport;
}

/* IPv6 sockets reach IPv4 VIPs by their mapped address, ::ffff:VIP (Java, for one, does). */
static __always_inline int is_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0xffff);
}

static __always_inline int balance6(struct bpf_sock_addr *ctx, int connected)
{
	if (!is_mapped(ctx))
		return PASS;
	__u32 addr = ctx->user_ip6[3];
	__u16 port = (__u16)ctx->user_port;
	struct target t = {};
	int r = pick(ctx, addr, port, connected, &t);
	if (r == NOT_OURS)
		return PASS;
	if (r == NO_BACKEND)
		return REFUSE;
	remember(ctx, addr, port, &t, connected);
	ctx->user_ip6[3] = t.addr;
	ctx->user_port = (__u32)t.port;
	return PASS;
}

static __always_inline void translate_back6(struct bpf_sock_addr *ctx, int connected)
{
	if (!is_mapped(ctx))
		return;
	__u16 vport = 0;
	__u32 vip = shown_as(ctx, ctx->user_ip6[3], (__u16)ctx->user_port, connected, &vport);
	if (!vip)
		return;
	ctx->user_ip6[3] = vip;
	ctx->user_port = (__u32)vport;
}

SEC("cgroup/connect4")
int shoal_connect4(struct bpf_sock_addr *ctx)
{
	return balance4(ctx, 1);
}

SEC("cgroup/sendmsg4")
int shoal_sendmsg4(struct bpf_sock_addr *ctx)
{
	return balance4(ctx, 0);
}

/* A connected UDP socket's datagrams come from the backend it was connected to. */
SEC("cgroup/recvmsg4")
int shoal_recvmsg4(struct bpf_sock_addr *ctx)
{
	translate_back4(ctx, 1);
	return PASS;
}

SEC("cgroup/getpeername4")
int shoal_getpeername4(struct bpf_sock_addr *ctx)
{
	translate_back4(ctx, 1);
	return PASS;
}

SEC("cgroup/connect6")
int shoal_connect6(struct bpf_sock_addr *ctx)
{
	return balance6(ctx, 1);
}

SEC("cgroup/sendmsg6")
int shoal_sendmsg6(struct bpf_sock_addr *ctx)
{
	return balance6(ctx, 0);
}

SEC("cgroup/recvmsg6")
int shoal_recvmsg6(struct bpf_sock_addr *ctx)
{
	translate_back6(ctx, 1);
	return PASS;
}

SEC("cgroup/getpeername6")
int shoal_getpeername6(struct bpf_sock_addr *ctx)
{
	translate_back6(ctx, 1);
	return PASS;
}

/* The project's licence: no GPL-only helper is used, so the kernel needs no GPL string. */
char LICENSE[] SEC("license") = "Apache-2.0";
