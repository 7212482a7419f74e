//! shoal's manager: the raft-replicated cluster store and everything that runs on it.
#![forbid(unsafe_code)]
