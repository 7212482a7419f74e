/* Map layouts of the tc routing mesh, shared with shoald (ebpf/src/mesh.rs). Addresses
 * and ports in network byte order. */
#ifndef SHOAL_MESH_H
#define SHOAL_MESH_H

#include <linux/types.h>

/* shoal_mesh_ports: (protocol, published port) -> backend count, and the session
 * affinity timeout (seconds; 0: none). */
struct shoal_mesh_port_key {
	__u8 proto;
	__u8 pad;
	__u16 port;
};

struct shoal_mesh_port {
	__u32 count;
	__u32 affinity_s;
};

/* shoal_mesh_affinity (LRU): (client address, protocol, published port) -> the backend
 * that client was last sent to, its slot, and when. The node's own processes count as
 * client 0. */
struct shoal_mesh_affinity_key {
	__u32 client;
	__u8 proto;
	__u8 pad;
	__u16 port;
};

struct shoal_mesh_affinity {
	__u64 last_ns;
	__u32 slot;
	__u32 addr;
};

/* shoal_mesh_backends: (protocol, published port, slot) -> a task on ingress. */
struct shoal_mesh_backend_key {
	__u8 proto;
	__u8 pad;
	__u16 port;
	__u32 slot;
};

struct shoal_mesh_backend {
	__u32 addr;
	__u16 port;
	/* 1: the task runs on this node, so it sees the client's address (no SNAT). */
	__u8 local;
	__u8 pad;
};

/* shoal_mesh_cfg[0]: the node's ingress address (SNAT source) and the ingress subnet. */
struct shoal_mesh_cfg {
	__u32 snat_addr;
	__u32 ingress_net;
	__u32 ingress_mask;
	__u32 pad;
};

/* A flow's addresses and ports as a packet carries them. */
struct shoal_mesh_flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* shoal_mesh_ct: where a flow was sent (addr, port of the task; snat). shoal_mesh_rev:
 * how its replies are shown (addr, port: the published port on the node's address). */
struct shoal_mesh_nat {
	__u32 addr;
	__u16 port;
	__u8 snat;
	/* shoal_mesh_ct: the backend's slot when the flow was picked (SHOAL_SLOT_UNKNOWN
	 * from 255 on), so a new SYN on a remembered tuple can check the backend is still
	 * the port's. Unused in the other maps. */
	__u8 slot;
	__u32 node;
	__u32 client;
};

#define SHOAL_SLOT_UNKNOWN 255

_Static_assert(sizeof(struct shoal_mesh_port_key) == 4, "shoal_mesh_port_key layout");
_Static_assert(sizeof(struct shoal_mesh_backend_key) == 8, "shoal_mesh_backend_key layout");
_Static_assert(sizeof(struct shoal_mesh_port) == 8, "shoal_mesh_port layout");
_Static_assert(sizeof(struct shoal_mesh_affinity_key) == 8, "shoal_mesh_affinity_key layout");
_Static_assert(sizeof(struct shoal_mesh_affinity) == 16, "shoal_mesh_affinity layout");
_Static_assert(sizeof(struct shoal_mesh_backend) == 8, "shoal_mesh_backend layout");
_Static_assert(sizeof(struct shoal_mesh_cfg) == 16, "shoal_mesh_cfg layout");
_Static_assert(sizeof(struct shoal_mesh_flow) == 16, "shoal_mesh_flow layout");
_Static_assert(sizeof(struct shoal_mesh_nat) == 16, "shoal_mesh_nat layout");

#endif
