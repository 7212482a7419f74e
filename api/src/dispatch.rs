//! Agent sessions: what a manager streams to a node, and what the node reports back.

use crate::objects::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    pub node_id: String,
    pub description: NodeDescription,
}

/// Everything one node needs to run its tasks and program its dataplane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct NodeView {
    pub node: Option<Node>,
    pub tasks: Vec<Task>,
    pub networks: Vec<NetworkView>,
    pub endpoints: Vec<ServiceEndpoint>,
    pub managers: Vec<ManagerPeer>,
    pub heartbeat_period_ns: u64,
    pub data_path_port: u16,
    /// Name and labels of each service with a task on this node, for the service templates
    /// (`{{.Service.Name}}`, `{{.Service.Labels}}`) the agent expands and the labels it puts
    /// on containers (swarmkit's task annotations).
    #[serde(default)]
    pub services: Vec<ServiceAnnotations>,
    /// Secrets used by this node's tasks that run or are about to, opened; nothing else.
    /// A secret leaves the view when its last such task ends.
    #[serde(default)]
    pub secrets: Vec<crate::secrets::SecretPayload>,
    /// Configs used by those tasks.
    #[serde(default)]
    pub configs: Vec<crate::secrets::Config>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceAnnotations {
    pub service_id: String,
    pub name: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The service's `--with-registry-auth` credentials, opened by the leader for the
    /// nodes that run one of its tasks; the agent passes them to the image pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::registry_auth::RegistryAuth>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetworkView {
    pub network: Network,
    /// Other nodes with tasks on this network (ingress: every node).
    pub peers: Vec<NetworkPeer>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetworkPeer {
    pub node_id: String,
    /// Underlay address of the peer's VTEP.
    pub addr: String,
    /// The peer's own address on this network, `ip/prefix`, when it has one (ingress).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoint {
    pub service_id: String,
    pub service_name: String,
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
    pub virtual_ips: Vec<VirtualIp>,
    pub backends: Vec<Backend>,
    /// Extra names of the service on a network (`--network name=N,alias=A`), by network id.
    #[serde(default)]
    pub aliases: Vec<(String, String)>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub task_id: String,
    pub task_name: String,
    pub node_id: String,
    pub network_id: String,
    /// `ip/prefix`.
    pub addr: String,
    pub state: TaskState,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerPeer {
    pub node_id: String,
    pub raft_id: u64,
    /// `ip:port` of its gRPC listener.
    pub addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "Kind", content = "Value")]
pub enum SessionMessage {
    /// The whole view; sent first and after every reconnect.
    Snapshot { version: u64, view: Box<NodeView> },
    /// Changes since `version - 1`'s view.
    Delta { version: u64, changes: Vec<Change> },
    /// Publish task output (`service logs`) with `Dispatcher.PublishLogs`.
    Logs(crate::logs::LogSubscription),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "Kind", content = "Value")]
pub enum Change {
    Node(Box<Node>),
    TaskUpsert(Box<Task>),
    TaskRemove(String),
    NetworkUpsert(Box<NetworkView>),
    NetworkRemove(String),
    EndpointUpsert(Box<ServiceEndpoint>),
    EndpointRemove(String),
    Managers(Vec<ManagerPeer>),
    HeartbeatPeriod(u64),
    ServiceUpsert(ServiceAnnotations),
    ServiceRemove(String),
    SecretUpsert(Box<crate::secrets::SecretPayload>),
    SecretRemove(String),
    ConfigUpsert(Box<crate::secrets::Config>),
    ConfigRemove(String),
}

impl NodeView {
    /// Applies a delta in place; the agent's copy then equals the manager's.
    pub fn apply(&mut self, changes: Vec<Change>) {
        fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
            match list.iter_mut().find(|x| same(x, &item)) {
                Some(slot) => *slot = item,
                None => list.push(item),
            }
        }
        for change in changes {
            match change {
                Change::Node(n) => self.node = Some(*n),
                Change::TaskUpsert(t) => upsert(&mut self.tasks, *t, |a, b| a.id == b.id),
                Change::TaskRemove(id) => self.tasks.retain(|t| t.id != id),
                Change::NetworkUpsert(n) => {
                    upsert(&mut self.networks, *n, |a, b| a.network.id == b.network.id)
                }
                Change::NetworkRemove(id) => self.networks.retain(|n| n.network.id != id),
                Change::EndpointUpsert(e) => {
                    upsert(&mut self.endpoints, *e, |a, b| a.service_id == b.service_id)
                }
                Change::EndpointRemove(id) => self.endpoints.retain(|e| e.service_id != id),
                Change::Managers(m) => self.managers = m,
                Change::HeartbeatPeriod(p) => self.heartbeat_period_ns = p,
                Change::ServiceUpsert(s) => {
                    upsert(&mut self.services, s, |a, b| a.service_id == b.service_id)
                }
                Change::ServiceRemove(id) => self.services.retain(|s| s.service_id != id),
                Change::SecretUpsert(s) => upsert(&mut self.secrets, *s, |a, b| a.id == b.id),
                Change::SecretRemove(id) => self.secrets.retain(|s| s.id != id),
                Change::ConfigUpsert(c) => upsert(&mut self.configs, *c, |a, b| a.id == b.id),
                Change::ConfigRemove(id) => self.configs.retain(|c| c.id != id),
            }
        }
    }
}

/// Heartbeat plus task status changes since the last report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    pub node_id: String,
    pub statuses: Vec<TaskStatusUpdate>,
    /// Version of the last session message whose view this node has fully applied
    /// (tasks, load balancer, DNS); 0 before the first.
    #[serde(default)]
    pub applied_version: u64,
    /// Tasks of this node that are about to stop and wait to leave every node's load
    /// balancer and DNS first.
    #[serde(default)]
    pub draining: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskStatusUpdate {
    pub task_id: String,
    pub status: TaskStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReportResponse {
    /// When the next heartbeat is due, in nanoseconds.
    pub heartbeat_period_ns: u64,
    /// Of the `draining` tasks, those no connected node balances to or resolves any more.
    #[serde(default)]
    pub drained: Vec<String>,
}
