//! Cluster objects as they are stored in raft and shown by `inspect`.
//!
//! Field names follow Docker's JSON (`ID`, `Spec.Name`, `Endpoint.VirtualIPs`, ...) so that
//! scripts written against `docker inspect` keep working. Durations are nanoseconds, as in
//! Docker's API.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Optimistic-concurrency version of an object: the raft index of its last change.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub index: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Worker,
    Manager,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Unknown => "unknown",
            NodeState::Down => "down",
            NodeState::Ready => "ready",
            NodeState::Disconnected => "disconnected",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub role: NodeRole,
    pub availability: Availability,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    pub architecture: String,
    #[serde(rename = "OS")]
    pub os: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    pub hostname: String,
    pub platform: Platform,
    /// Task executor of this node: "native" or "docker".
    pub executor: String,
    /// Service load balancer of this node (`shoald --dataplane`), e.g. "ebpf (...)".
    #[serde(default)]
    pub dataplane: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    pub state: NodeState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Underlay address the node advertises (no port).
    pub addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    /// Filled in when read: whether this manager leads raft now.
    #[serde(default)]
    pub leader: bool,
    /// Filled in when read: "reachable" or "unreachable" as seen by the answering manager.
    #[serde(default)]
    pub reachability: String,
    /// Address of the manager's gRPC listener, `ip:port`.
    pub addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
    /// Raft member id of the node while it is a manager (shoal-specific).
    #[serde(rename = "RaftID", default)]
    pub raft_id: u64,
    /// The node's own address on the ingress network, `ip/prefix` (shoal-specific): the
    /// routing mesh sends remote backends' traffic from it, so replies come back over the
    /// overlay, and local tasks on ingress route to the outside through it.
    #[serde(
        rename = "IngressAddr",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ingress_addr: String,
}

impl Node {
    pub fn hostname(&self) -> &str {
        if self.spec.name.is_empty() {
            &self.description.hostname
        } else {
            &self.spec.name
        }
    }
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

impl fmt::Display for PublishMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    pub target_port: u16,
    /// 0 in a spec asks for a dynamic port from 30000-32767 (ingress mode).
    #[serde(default)]
    pub published_port: u16,
    pub publish_mode: PublishMode,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

impl fmt::Display for EndpointMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    #[serde(default, skip_serializing_if = "SessionAffinity::is_none")]
    pub session_affinity: SessionAffinity,
}

/// Whether a client keeps to one task, like Kubernetes' `sessionAffinity: ClientIP`. Through
/// a VIP the client is the calling task (its network namespace); through a published port,
/// the client's address.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    #[default]
    None,
    /// A client stays on its task while that task runs and the client has connected within
    /// the timeout.
    #[serde(rename = "ClientIP")]
    ClientIp {
        #[serde(rename = "TimeoutSeconds")]
        timeout_s: u32,
    },
}

impl SessionAffinity {
    /// Kubernetes' default timeout: three hours.
    pub const DEFAULT_TIMEOUT_S: u32 = 10_800;
    /// And its largest: a day.
    pub const MAX_TIMEOUT_S: u32 = 86_400;

    pub fn is_none(&self) -> bool {
        *self == SessionAffinity::None
    }

    /// The timeout in seconds, or `None` without affinity.
    pub fn timeout_s(&self) -> Option<u32> {
        match self {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_s } => Some(*timeout_s),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `ip/prefix`, as Docker shows it.
    pub addr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    pub spec: EndpointSpec,
    /// Ports as allocated: dynamic published ports filled in.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    #[serde(rename = "VirtualIPs", default)]
    pub virtual_ips: Vec<VirtualIp>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// Image for the docker runtime; empty for native tasks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_period: u64,
    /// Bind mounts (containers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Health check (containers only); none uses the image's own, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
}

/// Docker's health check: `Test` is `["CMD-SHELL", "cmd"]`, `["CMD", ...]` or `["NONE"]`;
/// durations in nanoseconds (0: Docker's default).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: i64,
    #[serde(default)]
    pub timeout: i64,
    #[serde(default)]
    pub retries: i64,
    #[serde(default)]
    pub start_period: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    /// "bind" (the only type shoal supports).
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Limits {
    /// CPU in billionths of a CPU (Docker's NanoCPUs); 0: no limit.
    #[serde(rename = "NanoCPUs", default)]
    pub nano_cpus: i64,
    /// Memory in bytes; 0: no limit.
    #[serde(default)]
    pub memory_bytes: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceRequirements {
    #[serde(default)]
    pub limits: Limits,
}

fn default_stop_grace() -> u64 {
    10_000_000_000
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachmentConfig {
    /// Network id (the CLI resolves names before sending).
    pub target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    #[default]
    Any,
    OnFailure,
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// First restart delay in nanoseconds; doubled per consecutive failure up to `max_delay`.
    pub delay: u64,
    /// 0 means no limit.
    #[serde(default)]
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: 1_000_000_000,
            max_attempts: 0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A plain process in its own namespaces (`--runtime native`).
    Native,
    /// A Docker container.
    #[default]
    Docker,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Native => "native",
            Runtime::Docker => "docker",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    pub container_spec: ContainerSpec,
    pub runtime: Runtime,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Resource limits (containers only).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Bumped by `service update --force` to replace tasks with an unchanged spec.
    #[serde(default)]
    pub force_update: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    Replicated {
        #[serde(rename = "Replicas")]
        replicas: u64,
    },
    Global {},
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 means all at once.
    pub parallelism: u64,
    /// Nanoseconds to wait between batches.
    pub delay: u64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: 0,
            order: UpdateOrder::StopFirst,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskSpec,
    pub mode: ServiceMode,
    #[serde(default)]
    pub update_config: UpdateConfig,
    #[serde(default)]
    pub endpoint_spec: EndpointSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    /// "updating" or "completed".
    pub state: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completed_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    pub endpoint: Endpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// Raft index of the spec the tasks should run (changes on every spec update).
    #[serde(rename = "SpecVersion")]
    pub spec_version: Version,
}

/// Task states in lifecycle order. A task only ever moves forward; the terminal states are
/// everything from `Complete` on.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Allocated,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Whether a task may move from `self` to `next`: forward only, never out of a terminal state.
    pub fn can_move_to(self, next: TaskState) -> bool {
        next > self && !self.is_terminal()
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).expect("task state serializes");
        f.write_str(s.as_str().unwrap_or("unknown"))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    #[serde(rename = "PID", default)]
    pub pid: u32,
    #[serde(default)]
    pub exit_code: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub timestamp: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `ip/prefix` of the task on this network.
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Replica slot (1-based) for replicated services; 0 for global ones.
    pub slot: u64,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    pub spec: TaskSpec,
    /// Service spec version this task was made from.
    pub spec_version: Version,
    pub status: TaskStatus,
    pub desired_state: TaskState,
    #[serde(default)]
    pub networks_attachments: Vec<NetworkAttachment>,
    /// Consecutive failures of this slot before this task (restart backoff).
    #[serde(default)]
    pub restart_count: u64,
}

impl Task {
    /// Docker's task name: `service.slot.id` for replicated, `service.node.id` for global.
    pub fn name(&self, service_name: &str) -> String {
        if self.slot > 0 {
            format!("{service_name}.{}.{}", self.slot, self.id)
        } else {
            format!("{service_name}.{}.{}", self.node_id, self.id)
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IpamOptions {
    #[serde(default)]
    pub configs: Vec<IpamConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Driver {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub driver_configuration: Driver,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub attachable: bool,
    /// Requested subnets; empty asks for one from the default pool.
    #[serde(rename = "IPAMOptions", default)]
    pub ipam_options: IpamOptions,
}

/// Docker's driver option that carries the VXLAN id.
pub const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: NetworkSpec,
    pub driver_state: Driver,
    /// Allocated subnet and gateway.
    #[serde(rename = "IPAMOptions")]
    pub ipam_options: IpamOptions,
}

impl Network {
    pub fn vni(&self) -> Option<u32> {
        self.driver_state.options.get(VXLAN_ID_OPTION)?.parse().ok()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterSpec {
    pub name: String,
    /// Node heartbeat period in nanoseconds; a node is down after 1 period without one.
    pub dispatcher_heartbeat_period: u64,
    /// Lifetime of node certificates in nanoseconds.
    pub node_cert_expiry: u64,
    /// Terminated tasks kept per slot for `service ps`.
    pub task_history_retention_limit: u64,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: "default".into(),
            dispatcher_heartbeat_period: 5_000_000_000,
            node_cert_expiry: 90 * 24 * 3600 * 1_000_000_000,
            task_history_retention_limit: 5,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Cluster {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: ClusterSpec,
    /// Root CA certificate, PEM.
    #[serde(rename = "TLSInfo")]
    pub tls_info: String,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u8,
    pub data_path_port: u16,
    /// Only filled for callers allowed to see them (`join-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_tokens: Option<JoinTokens>,
}
