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
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shoal_mesh_ports SEC(".maps");

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

#endif
