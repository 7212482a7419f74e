//! Joining a cluster and renewing a node certificate.

use crate::dispatch::ManagerPeer;
use crate::objects::{NodeDescription, NodeRole};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub token: String,
    /// PEM certificate signing request for the node's own key.
    pub csr_pem: String,
    pub description: NodeDescription,
    /// Underlay address of the joining node (no port).
    pub advertise_addr: String,
    /// `ip:port` other nodes reach the joining node's gRPC listener at (managers).
    pub grpc_addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    pub raft_id: u64,
    pub cert_pem: String,
    pub ca_pem: String,
    pub managers: Vec<ManagerPeer>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RenewResponse {
    pub cert_pem: String,
    pub role: NodeRole,
}
