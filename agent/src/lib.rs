//! shoald: the node daemon. It serves the CLI on a unix socket, runs the tasks assigned to
//! its node, and on managers runs the manager beside them.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod engine_api;
pub mod exec;
pub mod identity;
pub mod lb;
pub mod logs;
pub mod metrics;
pub mod netns;
pub mod overlay;
pub mod session;
pub mod taskfiles;
pub mod tasks;
pub mod template;
