/* The routing mesh's service maps, declared alike by both objects: the tc mesh serves
 * published ports to the outside, the socket balancer serves them to the node's own
 * processes (pinned by name, so both use the same maps). */
#ifndef SHOAL_MESH_MAPS_H
#define SHOAL_MESH_MAPS_H

#include "shoal_mesh.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct shoal_mesh_port_key);
	__type(value, struct shoal_mesh_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct shoal_mesh_affinity_key);
	__type(value, struct shoal_mesh_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_affinity SEC(".maps");


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct shoal_mesh_backend_key);
	__type(value, struct shoal_mesh_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_backends SEC(".maps");

/* The node's addresses that published ports answer on. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_local SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shoal_mesh_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_cfg SEC(".maps");

/* shoal_mesh_node[0]: the cookie of the node's own network namespace, whose sockets get
 * published ports at connect(). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_node SEC(".maps");

/* A backend slot of published port `pk` (count `n`, affinity `aff_s` seconds) for
 * `client`: the one it had, while that slot still holds the same task and the timeout
 * has not run out, else a random one, remembered when the port has affinity. */
static __always_inline struct shoal_mesh_backend *
shoal_mesh_pick(const struct shoal_mesh_port_key *pk, __u32 n, __u32 aff_s, __u32 client,
		__u32 *slot_out)
{
	struct shoal_mesh_affinity_key ak = { .client = client, .proto = pk->proto, .port = pk->port };
	__u64 now = 0;
	struct shoal_mesh_backend_key bk = { .proto = pk->proto, .port = pk->port };
	struct shoal_mesh_backend *b;
	if (aff_s) {
		now = bpf_ktime_get_ns();
		struct shoal_mesh_affinity *a = bpf_map_lookup_elem(&shoal_mesh_affinity, &ak);
		if (a && a->slot < n && now - a->last_ns < (__u64)aff_s * 1000000000ULL) {
			bk.slot = a->slot;
			b = bpf_map_lookup_elem(&shoal_mesh_backends, &bk);
			if (b && b->addr == a->addr) {
				a->last_ns = now;
				*slot_out = bk.slot;
				return b;
			}
		}
	}
	bk.slot = bpf_get_prandom_u32() % n;
	b = bpf_map_lookup_elem(&shoal_mesh_backends, &bk);
	if (!b) {
		/* The set shrank between the two lookups: slot 0 is filled while any is. */
		bk.slot = 0;
		b = bpf_map_lookup_elem(&shoal_mesh_backends, &bk);
		if (!b)
			return 0;
	}
	if (aff_s) {
		struct shoal_mesh_affinity a = { .last_ns = now, .slot = bk.slot, .addr = b->addr };
		bpf_map_update_elem(&shoal_mesh_affinity, &ak, &a, BPF_ANY);
	}
	*slot_out = bk.slot;
	return b;
}

#endif
