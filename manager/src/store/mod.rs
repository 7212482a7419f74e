//! The replicated cluster state: every object, every allocation, and the deterministic
//! `apply` that moves it forward one raft entry at a time.

mod alloc;
mod apply;
mod autolock;
pub mod command;
mod secrets;

pub use alloc::Allocations;
pub(crate) use apply::cpus;
pub use apply::{Applied, GRPC_ADDR_LABEL, status_changes};
pub use autolock::{LockSetting, LockWanted};
pub use command::{Command, InitCluster, Proposal, TaskOp};
pub use secrets::PendingNames;

use serde::{Deserialize, Serialize};
use shoal_api::objects::*;
use shoal_api::wire::ErrorKind;
use std::collections::BTreeMap;

/// Why a command was refused. Refused commands change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name} is ambiguous: it matches {matches}; use a longer id")]
    Ambiguous {
        kind: &'static str,
        name: String,
        matches: String,
    },
    #[error("{kind} name {name} is already in use by {kind} {id}")]
    NameTaken {
        kind: &'static str,
        name: String,
        id: String,
    },
    #[error(
        "port {port}/{protocol} is already in use by service {service} ({service_id}) as {as_what}"
    )]
    PortTaken {
        port: u16,
        protocol: Protocol,
        service: String,
        service_id: String,
        as_what: &'static str,
    },
    #[error("{what}: {detail}")]
    Exhausted { what: String, detail: String },
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
    #[error("{object}: {reason}")]
    Precondition { object: String, reason: String },
    #[error(
        "update out of sequence: {object} changed since it was read (version {expected}, now {actual}); read it again and retry"
    )]
    VersionMismatch {
        object: String,
        expected: u64,
        actual: u64,
    },
    #[error("service {service} has no previous spec to roll back to")]
    NoPreviousSpec { service: String },
    #[error("the swarm is not initialized")]
    NotInitialized,
    /// One command of a group was refused, so the whole group was. `object` is empty when
    /// the refusal names the object already.
    #[error("{object}{source}; nothing was changed")]
    InGroup {
        object: String,
        source: Box<StoreError>,
    },
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Ambiguous { .. } | StoreError::Invalid { .. } => ErrorKind::Invalid,
            // Docker answers a stale version with 409 as well.
            StoreError::NameTaken { .. }
            | StoreError::PortTaken { .. }
            | StoreError::VersionMismatch { .. } => ErrorKind::Conflict,
            StoreError::Exhausted { .. } => ErrorKind::Exhausted,
            StoreError::Precondition { .. }
            | StoreError::NoPreviousSpec { .. }
            | StoreError::NotInitialized => ErrorKind::Precondition,
            StoreError::InGroup { source, .. } => source.kind(),
        }
    }

    pub fn invalid(object: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn precondition(object: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Precondition {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

/// The cluster record with the secrets that only managers hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterRecord {
    pub cluster: Cluster,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
}

/// Everything raft replicates. Maps are ordered so that apply, snapshots and every answer
/// built from them are deterministic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub cluster: Option<ClusterRecord>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub networks: BTreeMap<String, Network>,
    pub alloc: Option<Allocations>,
    /// When the leader saw each task start running and end, by its own clock (the
    /// command's `now`): rolling updates count a task that ends within `monitor` of its
    /// start as a failure. Kept beside the tasks because Docker's task has no such field.
    #[serde(default)]
    pub task_times: BTreeMap<String, TaskTimes>,
    /// `--with-registry-auth` credentials by service id, sealed under the cluster data key
    /// (`ca::DataKey::seal_text`, the service id as associated data): the log and snapshots
    /// never hold them in the clear. Beside the services, not in `Service`, so inspect never
    /// shows them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_auth: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, shoal_api::secrets::Secret>,
    /// Each secret's data by secret id, sealed under the cluster data key with the id as
    /// associated data; beside the secrets so that nothing that shows a secret shows it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, shoal_api::secrets::Config>,
    /// The unlock key of an autolocked swarm, sealed under the cluster data key
    /// (`ca::UnlockKey::seal_under`); present exactly when autolock is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
    /// Request ids of the last entries applied: a proposal re-sent after a leader change
    /// may be in the log twice, and only its first copy applies. Replicated (and in
    /// snapshots) so that every manager skips the same copies.
    #[serde(default, skip_serializing_if = "RecentRequests::is_empty")]
    pub recent_requests: RecentRequests,
}

/// How many request ids [`RecentRequests`] remembers: a re-sent proposal follows its first
/// copy within a few elections, far fewer entries than this.
pub const RECENT_REQUESTS: usize = 10_000;

/// A bounded window of request ids, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(
    from = "std::collections::VecDeque<u64>",
    into = "std::collections::VecDeque<u64>"
)]
pub struct RecentRequests {
    order: std::collections::VecDeque<u64>,
    seen: std::collections::HashSet<u64>,
}

impl From<std::collections::VecDeque<u64>> for RecentRequests {
    fn from(order: std::collections::VecDeque<u64>) -> Self {
        let seen = order.iter().copied().collect();
        RecentRequests { order, seen }
    }
}

impl From<RecentRequests> for std::collections::VecDeque<u64> {
    fn from(r: RecentRequests) -> Self {
        r.order
    }
}

impl RecentRequests {
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Records `id`; false when it was seen already (a duplicate to skip).
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_REQUESTS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// See [`ClusterState::task_times`]. RFC 3339, empty until it happened.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskTimes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub running_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ended_at: String,
}

/// Something with an id and a human name, for lookups by id, id prefix or name.
pub trait Named {
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
}

impl Named for Service {
    const KIND: &'static str = "service";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Named for Network {
    const KIND: &'static str = "network";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Named for shoal_api::secrets::Secret {
    const KIND: &'static str = "secret";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Named for shoal_api::secrets::Config {
    const KIND: &'static str = "config";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Named for Node {
    const KIND: &'static str = "node";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        self.hostname()
    }
}

impl Named for Task {
    const KIND: &'static str = "task";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.id
    }
}

/// Docker's lookup order: exact id, exact name, then a unique id prefix.
pub fn lookup<'a, T: Named>(map: &'a BTreeMap<String, T>, key: &str) -> Result<&'a T, StoreError> {
    if let Some(obj) = map.get(key) {
        return Ok(obj);
    }
    let by_name: Vec<&T> = map.values().filter(|o| o.name() == key).collect();
    match by_name.len() {
        1 => return Ok(by_name[0]),
        n if n > 1 => {
            return Err(StoreError::Ambiguous {
                kind: T::KIND,
                name: key.to_string(),
                matches: by_name
                    .iter()
                    .map(|o| o.id())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        _ => {}
    }
    if !key.is_empty() {
        let by_prefix: Vec<&T> = map
            .range(key.to_string()..)
            .take_while(|(id, _)| id.starts_with(key))
            .map(|(_, o)| o)
            .collect();
        match by_prefix.len() {
            1 => return Ok(by_prefix[0]),
            n if n > 1 => {
                return Err(StoreError::Ambiguous {
                    kind: T::KIND,
                    name: key.to_string(),
                    matches: by_prefix
                        .iter()
                        .map(|o| o.id())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            _ => {}
        }
    }
    Err(StoreError::NotFound {
        kind: T::KIND,
        name: key.to_string(),
    })
}

impl ClusterState {
    pub fn record(&self) -> Result<&ClusterRecord, StoreError> {
        self.cluster.as_ref().ok_or(StoreError::NotInitialized)
    }

    pub fn ingress(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }

    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .values()
            .filter(|n| n.spec.role == NodeRole::Manager && n.manager_status.is_some())
    }

    /// Every manager with its raft id and gRPC address, sorted.
    pub fn manager_peers(&self) -> Vec<shoal_api::dispatch::ManagerPeer> {
        let mut peers: Vec<_> = self
            .managers()
            .filter_map(|n| {
                Some(shoal_api::dispatch::ManagerPeer {
                    node_id: n.id.clone(),
                    raft_id: n.raft_id,
                    addr: n.manager_status.as_ref()?.addr.clone(),
                })
            })
            .collect();
        peers.sort();
        peers
    }

    /// The host-mode ports a service publishes, as (protocol, port).
    pub fn host_ports(service: &Service) -> Vec<(Protocol, u16)> {
        service
            .endpoint
            .ports
            .iter()
            .filter(|p| p.publish_mode == PublishMode::Host)
            .map(|p| (p.protocol, p.published_port))
            .collect()
    }

    /// Tasks of one service, in id order.
    pub fn service_tasks<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> {
        self.tasks
            .values()
            .filter(move |t| t.service_id == service_id)
    }

    /// Whether a service publishes any port through the ingress routing mesh.
    pub fn uses_ingress(spec: &ServiceSpec) -> bool {
        spec.endpoint_spec
            .ports
            .iter()
            .any(|p| p.publish_mode == PublishMode::Ingress)
    }
}

#[cfg(test)]
pub(crate) mod tests;
