//! Pure, deterministic allocators applied by the raft state machine on every manager.
//!
//! Every manager applies the same commands, so results never depend on randomness, clocks or
//! hash order. The allocators live in raft snapshots: their size grows with what is in use,
//! never with the size of the space (a VNI space has 16M ids).

pub mod ipam;
pub mod ports;
pub mod serial;
pub mod subnets;

#[cfg(test)]
mod conformance;

pub use ipam::Ipv4Pool;
pub use ports::{PortSpace, PublishedPorts};
pub use serial::SerialSpace;
pub use subnets::SubnetPool;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{what} exhausted: all {capacity} in use")]
    Exhausted { what: String, capacity: u64 },
    #[error("{item} is already allocated")]
    Taken { item: String },
    #[error("{item} is outside {range}")]
    OutOfRange { item: String, range: String },
    #[error("{item} overlaps {other}")]
    Overlaps { item: String, other: String },
}

/// A space of resources handed out serially: the next allocation starts after the last one
/// handed out and wraps, so a freed item is not reused at once (Swarm's serial allocation,
/// which avoids stale ARP/LB aliasing).
pub trait Allocator {
    type Item: Clone + Ord + std::fmt::Debug;
    fn allocate_next(&mut self) -> Result<Self::Item, AllocError>;
    fn allocate_specific(&mut self, item: Self::Item) -> Result<(), AllocError>;
    /// Returns false if the item was not allocated.
    fn release(&mut self, item: &Self::Item) -> bool;
    /// True for allocated items and for items the space reserves (e.g. a gateway).
    fn is_allocated(&self, item: &Self::Item) -> bool;
    /// How many items `allocate_next` can hand out from an empty space.
    fn capacity(&self) -> u64;
    /// How many items are allocated, including specific ones outside the `allocate_next` range.
    fn in_use(&self) -> u64;
}
