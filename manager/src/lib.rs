//! shoal's manager: the raft-replicated cluster store and everything that runs on it.
#![forbid(unsafe_code)]

pub mod admission;
pub mod allocator;
pub mod ca;
pub mod consensus;
pub mod controlapi;
pub mod dispatcher;
pub mod ids;
pub mod join;
pub mod leader;
pub mod orchestrator;
pub mod private_files;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod stack;
pub mod store;
