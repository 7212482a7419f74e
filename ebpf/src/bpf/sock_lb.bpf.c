/* Socket-level service load balancing: a connect() or sendto() to a VIP is sent straight
 * to one of its backends, so packets carry the backend's address from the first byte and
 * need no NAT and no conntrack entry; recvmsg and getpeername translate back so the
 * application sees the VIP it asked for. Attached to a cgroup v2 holding the tasks. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "shoal_lb.h"

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

/* TCP sockets (and connected UDP ones) keep the VIP they asked for in socket storage:
 * freed with the socket, and cheaper per connection than an LRU entry. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct shoal_revnat_value);
} shoal_sk_vip SEC(".maps");

static __always_inline int balance(struct bpf_sock_addr *ctx, int connected)
{
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return PASS;
	__u32 vip = ctx->user_ip4;
	struct shoal_member_key member = { .netns = bpf_get_netns_cookie(ctx), .vip = vip };
	if (!bpf_map_lookup_elem(&shoal_member, &member))
		return PASS;
	struct shoal_svc_value *svc = bpf_map_lookup_elem(&shoal_svc, &vip);
	if (!svc || svc->count == 0)
		return REFUSE;
	struct shoal_backend_key slot = { .vip = vip, .slot = bpf_get_prandom_u32() % svc->count };
	__u32 *backend = bpf_map_lookup_elem(&shoal_backends, &slot);
	if (!backend) {
		/* The set shrank between the two lookups: slot 0 is filled while any is. */
		slot.slot = 0;
		backend = bpf_map_lookup_elem(&shoal_backends, &slot);
		if (!backend)
			return REFUSE;
	}
	__u16 port = (__u16)ctx->user_port;
	if (connected) {
		struct shoal_revnat_value *sv = bpf_sk_storage_get(&shoal_sk_vip, ctx->sk, 0,
								   BPF_SK_STORAGE_GET_F_CREATE);
		if (sv) {
			sv->vip = vip;
			sv->port = port;
		}
	} else {
		/* An unconnected UDP socket may talk to many VIPs: one entry per backend. */
		struct shoal_revnat_key rk = {
			.cookie = bpf_get_socket_cookie(ctx),
			.addr = *backend,
			.port = port,
		};
		struct shoal_revnat_value rv = { .vip = vip, .port = port };
		bpf_map_update_elem(&shoal_revnat, &rk, &rv, BPF_ANY);
	}
	ctx->user_ip4 = *backend;
	return PASS;
}

static __always_inline void translate_back(struct bpf_sock_addr *ctx, int connected)
{
	if (connected) {
		struct shoal_revnat_value *sv = bpf_sk_storage_get(&shoal_sk_vip, ctx->sk, 0, 0);
		if (sv) {
			ctx->user_ip4 = sv->vip;
			ctx->user_port = (__u32)sv->port;
			return;
		}
	}
	struct shoal_revnat_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct shoal_revnat_value *rv = bpf_map_lookup_elem(&shoal_revnat, &rk);
	if (!rv)
		return;
	ctx->user_ip4 = rv->vip;
	/* The context's port field takes 4-byte stores only. */
	ctx->user_port = (__u32)rv->port;
}

SEC("cgroup/connect4")
int shoal_connect4(struct bpf_sock_addr *ctx)
{
	return balance(ctx, 1);
}

SEC("cgroup/sendmsg4")
int shoal_sendmsg4(struct bpf_sock_addr *ctx)
{
	return balance(ctx, 0);
}

SEC("cgroup/recvmsg4")
int shoal_recvmsg4(struct bpf_sock_addr *ctx)
{
	/* A connected UDP socket's datagrams come from the backend it was connected to. */
	translate_back(ctx, 1);
	return PASS;
}

SEC("cgroup/getpeername4")
int shoal_getpeername4(struct bpf_sock_addr *ctx)
{
	translate_back(ctx, 1);
	return PASS;
}

/* The project's licence: no GPL-only helper is used, so the kernel needs no GPL string. */
char LICENSE[] SEC("license") = "Apache-2.0";
