/* Map layouts shared by the socket load balancer's programs and shoald (ebpf/src/lib.rs
 * declares the same structs with #[repr(C)]; both sides check the sizes). Addresses and
 * ports are kept in network byte order, as the kernel hands them to sock_addr programs. */
#ifndef SHOAL_LB_H
#define SHOAL_LB_H

#include <linux/types.h>

/* shoal_svc: VIP -> how many backends it has now (0: refuse at once), and how long a
 * client keeps its backend after its last connection (seconds; 0: no session affinity). */
struct shoal_svc_value {
	__u32 count;
	__u32 affinity_s;
};

/* shoal_affinity (LRU), keyed like shoal_member by (netns cookie, VIP): the backend a
 * client namespace was last sent to, in which slot, and when. Used only while the slot
 * still holds that backend and the timeout has not run out. */
struct shoal_affinity_value {
	__u64 last_ns;
	__u32 slot;
	__u32 backend;
};

/* shoal_backends: (VIP, slot) -> backend address; slots 0..count-1 are filled. */
struct shoal_backend_key {
	__u32 vip;
	__u32 slot;
};

/* shoal_member: (network namespace cookie, VIP) -> 1 when tasks of that namespace may use
 * the VIP: a task balances only the VIPs of the networks it is attached to. */
struct shoal_member_key {
	__u64 netns;
	__u32 vip;
	__u32 pad;
};

/* shoal_revnat: (socket cookie, backend address, port) -> the VIP and port the socket
 * asked for, so getpeername() and recvfrom() show the VIP. */
struct shoal_revnat_key {
	__u64 cookie;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct shoal_revnat_value {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

/* shoal_sk_vip (socket storage of connected sockets): the address and port asked for (a
 * VIP, or a published port of the node), and the backend the socket was sent to. */
struct shoal_sk_vip {
	__u32 vip;
	__u32 backend;
	__u16 port;
	__u16 backend_port;
};

_Static_assert(sizeof(struct shoal_sk_vip) == 12, "shoal_sk_vip layout");
_Static_assert(sizeof(struct shoal_svc_value) == 8, "shoal_svc_value layout");
_Static_assert(sizeof(struct shoal_backend_key) == 8, "shoal_backend_key layout");
_Static_assert(sizeof(struct shoal_affinity_value) == 16, "shoal_affinity_value layout");
_Static_assert(sizeof(struct shoal_member_key) == 16, "shoal_member_key layout");
_Static_assert(sizeof(struct shoal_revnat_key) == 16, "shoal_revnat_key layout");
_Static_assert(sizeof(struct shoal_revnat_value) == 8, "shoal_revnat_value layout");

#endif
