//! shoal's eBPF programs, compiled from `src/bpf/*.bpf.c` by the build script, and the
//! layouts of the maps they share with shoald. Every struct here mirrors one in
//! `src/bpf/shoal_lb.h`: `#[repr(C)]`, no padding the compiler could add, and the same
//! size asserted on both sides (aya also refuses a map whose key or value size differs).
//! Addresses and ports are in network byte order, as in the kernel's `bpf_sock_addr`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

pub mod batch;
pub mod mesh;

/// The socket load balancer: `cgroup/{connect,sendmsg,recvmsg,getpeername}{4,6}` (the
/// IPv6 ones for IPv4-mapped addresses).
pub fn sock_lb_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"))
}

/// The programs of `sock_lb_object`, by the name of their function (each one's section
/// says where it attaches).
pub const SOCK_LB_PROGRAMS: [&str; 8] = [
    "shoal_connect4",
    "shoal_sendmsg4",
    "shoal_recvmsg4",
    "shoal_getpeername4",
    "shoal_connect6",
    "shoal_sendmsg6",
    "shoal_recvmsg6",
    "shoal_getpeername6",
];

/// Map names, as pinned under the pin directory.
pub const MAP_SVC: &str = "shoal_svc";
pub const MAP_BACKENDS: &str = "shoal_backends";
pub const MAP_MEMBER: &str = "shoal_member";
pub const MAP_REVNAT: &str = "shoal_revnat";
pub const MAP_SK_VIP: &str = "shoal_sk_vip";
pub const MAP_UDP_STICKY: &str = "shoal_udp_sticky";
/// Session affinity of VIPs, per client namespace (LRU, written by the programs).
pub const MAP_AFFINITY: &str = "shoal_affinity";

/// A VIP or backend address as the programs see it.
pub fn addr_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn addr_of_key(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcValue {
    pub count: u32,
    /// Session affinity timeout in seconds; 0: none.
    pub affinity_s: u32,
}

/// What `shoal_affinity` remembers of a client namespace's last pick for a VIP.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffinityValue {
    pub last_ns: u64,
    pub slot: u32,
    pub backend: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendKey {
    pub vip: u32,
    pub slot: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberKey {
    pub netns: u64,
    pub vip: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RevnatKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevnatValue {
    pub vip: u32,
    pub port: u16,
    pub pad: u16,
}

// The same sizes as the _Static_asserts in shoal_lb.h.
const _: () = assert!(size_of::<SvcValue>() == 8);
const _: () = assert!(size_of::<BackendKey>() == 8);
const _: () = assert!(size_of::<AffinityValue>() == 16);
const _: () = assert!(size_of::<MemberKey>() == 16);
const _: () = assert!(size_of::<RevnatKey>() == 16);
const _: () = assert!(size_of::<RevnatValue>() == 8);

#[expect(unsafe_code, reason = "aya's Pod marker for map layouts")]
mod pod {
    // SAFETY: every type here is a #[repr(C)] struct of plain integers with no padding
    // (sizes asserted above), so any bit pattern is a valid value and every byte the
    // kernel copies is initialised.
    unsafe impl aya::Pod for super::SvcValue {}
    // SAFETY: as for SvcValue.
    unsafe impl aya::Pod for super::BackendKey {}
    // SAFETY: as for SvcValue.
    unsafe impl aya::Pod for super::AffinityValue {}
    // SAFETY: as for SvcValue.
    unsafe impl aya::Pod for super::MemberKey {}
    // SAFETY: as for SvcValue.
    unsafe impl aya::Pod for super::RevnatKey {}
    // SAFETY: as for SvcValue.
    unsafe impl aya::Pod for super::RevnatValue {}
}

/// From the kernel's asm-generic/socket.h (the libc crate does not export it for glibc).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie the kernel gives the network namespace of `socket`
/// (`SO_NETNS_COOKIE`, Linux 5.14): what `bpf_get_netns_cookie` returns for it.
#[expect(
    unsafe_code,
    reason = "getsockopt(SO_NETNS_COOKIE) has no safe wrapper"
)]
pub fn netns_cookie(socket: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is a live socket for the borrow's lifetime, and the kernel writes at
    // most `len` (8) bytes into `cookie`, which is 8 bytes and outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_holds_every_program_and_map() {
        let obj = aya_obj_names(sock_lb_object());
        for prog in SOCK_LB_PROGRAMS {
            assert!(obj.contains(prog), "{prog} missing from sock_lb.o");
        }
        for map in [MAP_SVC, MAP_BACKENDS, MAP_MEMBER, MAP_REVNAT] {
            assert!(obj.contains(map), "{map} missing from sock_lb.o");
        }
    }

    /// The object's symbol names, found as text in its string table.
    fn aya_obj_names(obj: &[u8]) -> String {
        String::from_utf8_lossy(obj).into_owned()
    }

    #[test]
    fn addresses_keep_network_order() {
        let ip: Ipv4Addr = "198.18.1.2".parse().unwrap();
        assert_eq!(addr_key(ip).to_ne_bytes(), [198, 18, 1, 2]);
        assert_eq!(addr_of_key(addr_key(ip)), ip);
    }
}
