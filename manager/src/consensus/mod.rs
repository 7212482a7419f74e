//! Raft: the on-disk log (`storage`), the thread that owns the raft node (`node`), the
//! feed of what each applied entry touched (`feed`) and the gRPC transport between managers
//! (`transport`).

pub mod feed;
pub mod logger;
pub mod node;
pub mod storage;
pub mod transport;

pub use feed::{Feed, FeedEntry, TooFarBehind};
pub use node::{ProposeError, RaftConfig, RaftHandle};
