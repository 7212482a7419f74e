//! The tc routing mesh (`src/bpf/mesh.bpf.c`): its object, programs, maps and layouts,
//! mirroring `src/bpf/shoal_mesh.h`.

/// `shoal_mesh_in` (tcx ingress of underlay devices), `shoal_mesh_out` and
/// `shoal_mesh_reply` (tcx egress and ingress of the ingress bridge).
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh.o"))
}

pub const PROG_IN: &str = "shoal_mesh_in";
pub const PROG_REPLY: &str = "shoal_mesh_reply";
pub const PROG_OUT: &str = "shoal_mesh_out";
pub const MAP_PORTS: &str = "shoal_mesh_ports";
/// Session affinity of published ports, per client address (LRU, written by the programs).
pub const MAP_AFFINITY: &str = "shoal_mesh_affinity";
pub const MAP_BACKENDS: &str = "shoal_mesh_backends";
pub const MAP_LOCAL: &str = "shoal_mesh_local";
pub const MAP_CFG: &str = "shoal_mesh_cfg";
pub const MAP_CT: &str = "shoal_mesh_ct";
pub const MAP_REV: &str = "shoal_mesh_rev";
/// [0]: the cookie of the node's network namespace (u64).
pub const MAP_NODE: &str = "shoal_mesh_node";

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortKey {
    pub proto: u8,
    pub pad: u8,
    /// Network byte order.
    pub port: u16,
}

/// A published port's backend count and session affinity timeout (seconds, 0: none).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Port {
    pub count: u32,
    pub affinity_s: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendKey {
    pub proto: u8,
    pub pad: u8,
    pub port: u16,
    pub slot: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: u32,
    pub port: u16,
    pub local: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cfg {
    pub snat_addr: u32,
    pub ingress_net: u32,
    pub ingress_mask: u32,
    pub pad: u32,
}

/// A flow's addresses and ports as a packet carries them (key of `shoal_mesh_ct`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Where a flow was sent (value of `shoal_mesh_ct`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nat {
    pub addr: u32,
    pub port: u16,
    pub snat: u8,
    /// The backend's slot when the flow was picked (255: unknown).
    pub slot: u8,
    pub node: u32,
    pub client: u32,
}

const _: () = assert!(size_of::<PortKey>() == 4);
const _: () = assert!(size_of::<Flow>() == 16);
const _: () = assert!(size_of::<Nat>() == 16);
const _: () = assert!(size_of::<Port>() == 8);
const _: () = assert!(size_of::<BackendKey>() == 8);
const _: () = assert!(size_of::<Backend>() == 8);
const _: () = assert!(size_of::<Cfg>() == 16);

#[expect(unsafe_code, reason = "aya's Pod marker for map layouts")]
mod pod {
    // SAFETY: every type here is a #[repr(C)] struct of plain integers with no padding
    // (sizes asserted above), so any bit pattern is a valid value and every byte the
    // kernel copies is initialised.
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::Port {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::BackendKey {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::Cfg {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: as for PortKey.
    unsafe impl aya::Pod for super::Nat {}
}

/// A port as the programs see it (network byte order in memory).
pub fn port_key(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}
