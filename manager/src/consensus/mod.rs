//! Raft: the on-disk log (`storage`), the thread that owns the raft node (`node`) and the
//! gRPC transport between managers (`transport`).

pub mod logger;
pub mod node;
pub mod storage;
pub mod transport;

pub use node::{ProposeError, RaftConfig, RaftHandle};
