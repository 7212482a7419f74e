//! What the CLI asks its local `shoald` over the unix socket.

use crate::control::ControlRequest;
use crate::objects::Node;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Op", content = "Args")]
#[expect(
    clippy::large_enum_variant,
    reason = "one request per CLI call; boxing buys nothing"
)]
pub enum LocalRequest {
    SwarmInit(SwarmInit),
    SwarmJoin(SwarmJoin),
    SwarmLeave {
        force: bool,
    },
    /// What this node is: `node inspect self` and `shoal info`.
    Info,
    /// The node's dataplane, executor, kernel capabilities and overlay peers.
    Doctor,
    Control(ControlRequest),
    /// `swarm unlock`: the unlock key for a locked manager (`SWMKEY-1-...`).
    SwarmUnlock {
        key: crate::join::KeyText,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SwarmInit {
    /// Address other nodes reach this one at (`ip` or `ip:port`).
    pub advertise_addr: String,
    /// Where the gRPC listener binds (`ip:port`), default `0.0.0.0:2377`.
    pub listen_addr: String,
    /// CIDRs that overlay subnets are carved from.
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u8,
    pub data_path_port: u16,
    /// Range for dynamic published ports, default 30000-32767 (shoal-specific, for tests).
    pub dynamic_port_range: Option<(u16, u16)>,
    /// `--autolock`: the manager keys on disk are locked under an unlock key from the start.
    #[serde(default)]
    pub autolock: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SwarmJoin {
    pub token: String,
    /// A manager's `ip:port`.
    pub remote_addr: String,
    pub advertise_addr: String,
    pub listen_addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Kind", content = "Value")]
pub enum LocalResponse {
    Done,
    /// `swarm init`/`join` result: the node id.
    Joined {
        node_id: String,
    },
    Info(Box<NodeInfo>),
    Doctor(Box<DoctorReport>),
    Control(crate::control::ControlResponse),
}

/// `shoal doctor`: what this node runs with and what its kernel offers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DoctorReport {
    pub node_id: String,
    /// Load-balancer backend ("nftables"), or why there is none.
    pub dataplane: String,
    /// "docker" or "native".
    pub executor: String,
    pub checks: Vec<Check>,
    /// Other nodes this one has overlay tunnels to.
    pub peers: Vec<DoctorPeer>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub name: String,
    pub present: bool,
    pub detail: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct DoctorPeer {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Underlay address of its VTEP.
    pub addr: String,
    pub networks: Vec<String>,
    /// The node's state as the cluster sees it ("ready", "down", ...), when known here.
    pub state: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// "inactive", "pending", "active", "error" or "locked", as Docker's `LocalNodeState`.
    pub local_node_state: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    pub control_available: bool,
    pub node_addr: String,
    /// Managers this node knows, `ip:port`.
    pub remote_managers: Vec<String>,
    /// The node as the cluster last described it to this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// Names of the secrets this node holds now: those in its view, which the managers
    /// send only while one of its tasks uses them.
    #[serde(default)]
    pub held_secrets: Vec<String>,
}

/// Streaming requests to the local daemon (`Local.Stream`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Op", content = "Args")]
pub enum LocalStreamRequest {
    /// Answered with `crate::logs::LogLine` frames.
    ServiceLogs(crate::logs::LogsRequest),
}
