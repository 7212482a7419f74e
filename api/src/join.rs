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
    /// The cluster data key (base64), for a node that joins as a manager; see
    /// `shoal_manager::ca::DataKey`. Absent for workers and from clusters without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<KeyText>,
    /// The swarm's unlock key (`SWMKEY-1-...`) when it is autolocked, for managers: the new
    /// manager locks its keys at once rather than once its raft replica has caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<KeyText>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RenewResponse {
    pub cert_pem: String,
    pub role: NodeRole,
    /// The cluster data key (base64) when the new certificate's role is manager, so a
    /// promoted node can open what the store keeps sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<KeyText>,
    /// As in [`JoinResponse::unlock_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<KeyText>,
}

/// Key material as text on the wire; its `Debug` shows nothing of it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct KeyText(pub String);

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(..)")
    }
}

/// Wiped when dropped: it carries the data key and the unlock key.
impl Drop for KeyText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
