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
    /// CPUs and memory of the machine, which the scheduler fills with reservations. Nodes
    /// that joined before nodes reported them show zeros until their next session.
    #[serde(default)]
    pub resources: Resources,
}

/// What a node offers (Docker's `Description.Resources`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPUs in billionths of a CPU.
    #[serde(rename = "NanoCPUs", default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub memory_bytes: i64,
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
    #[serde(default)]
    pub protocol: Protocol,
    pub target_port: u16,
    /// 0 in a spec asks for a dynamic port from 30000-32767 (ingress mode).
    #[serde(default)]
    pub published_port: u16,
    #[serde(default)]
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
    /// Docker's clients leave the mode out for the default (vip).
    #[serde(default)]
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
    /// Labels put on the task's container (`--container-label`, Compose `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Replaces the image's entrypoint (`--entrypoint`); for native tasks, the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// May hold service templates (`{{.Task.Slot}}`), expanded per task by the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `KEY=VALUE`; values may hold service templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory (`--workdir`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    /// `user[:group]` (`--user`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Run an init inside the container (`--init`); none keeps the engine's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Signal that stops the task (`--stop-signal`); empty: the image's, else SIGTERM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(rename = "TTY", default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Nanoseconds between the stop signal and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_period: u64,
    /// Health check (containers only); none uses the image's own, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Extra `/etc/hosts` lines, `IP HOSTNAME...` as Docker stores them (`--host`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The task's resolver stays 127.0.0.11; these are its forwarders and search list.
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// "default", "process" or "hyperv"; ignored on Linux, as Docker does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isolation: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--secret`: files under `/run/secrets` (or an absolute target), from memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secrets::SecretReference>,
    /// `--config`: files at their target (default `/<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::secrets::ConfigReference>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
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
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub start_interval: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Docker's mount (`--mount`, Compose `volumes`): `Type` is "bind", "volume" or "tmpfs".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: String,
    /// Host path (bind), volume name (volume; empty: anonymous), unused for tmpfs. May hold
    /// service templates. Always written, since agents of the previous version require it.
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct BindOptions {
    /// "rprivate", "private", "rshared", "shared", "rslave" or "slave".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub propagation: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeOptions {
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<Driver>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    /// 0: the kernel's default (half of memory).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    /// File mode bits of the tmpfs root; 0: 1777.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
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
    /// Processes in the task; 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub pids: i64,
}

/// What the scheduler sets aside for a task on its node: a node whose reservations would
/// exceed its CPUs or memory is not chosen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Reservations {
    #[serde(rename = "NanoCPUs", default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub memory_bytes: i64,
}

impl Reservations {
    pub fn is_empty(&self) -> bool {
        self.nano_cpus == 0 && self.memory_bytes == 0
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceRequirements {
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Reservations::is_empty")]
    pub reservations: Reservations,
}

fn default_stop_grace() -> u64 {
    10_000_000_000
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Spread over the values of a node label, in order (`--placement-pref spread=...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// At most this many tasks of the service on one node; 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_replicas: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PlacementPreference {
    pub spread: SpreadOver,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct SpreadOver {
    /// `node.labels.KEY` (or another node attribute the constraints know).
    pub spread_descriptor: String,
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

/// Fields left out take the defaults (Docker's clients send only what was set).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// First restart delay in nanoseconds; doubled per consecutive failure up to `max_delay`.
    pub delay: u64,
    /// 0 means no limit.
    #[serde(default)]
    pub max_attempts: u64,
    /// Nanoseconds over which `max_attempts` counts restarts; 0: every restart counts.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub window: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: 1_000_000_000,
            max_attempts: 0,
            window: 0,
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
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Resource limits (containers only) and reservations (the scheduler's).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Docker log driver and its options (containers only); none: the engine's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
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

/// What a rollout does when too many of its new tasks fail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

impl fmt::Display for FailureAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        })
    }
}

/// A fraction from 0 to 1 (Docker's `MaxFailureRatio`, a float32), compared by value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
#[serde(transparent)]
pub struct Ratio(pub f32);

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Ratio {}

impl Ratio {
    fn is_zero(&self) -> bool {
        self.0 == 0.0
    }
}

/// Docker's `UpdateConfig`, also used for `RollbackConfig`; fields left out take the
/// defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 means all at once.
    pub parallelism: u64,
    /// Nanoseconds to wait between batches.
    pub delay: u64,
    #[serde(default)]
    pub failure_action: FailureAction,
    /// Nanoseconds after a task starts during which its failure counts against the rollout;
    /// 0: Docker's default, 5s.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub monitor: u64,
    /// Share of the updated tasks that may fail before `failure_action` is taken.
    #[serde(default, skip_serializing_if = "Ratio::is_zero")]
    pub max_failure_ratio: Ratio,
    pub order: UpdateOrder,
}

impl UpdateConfig {
    /// Docker's default `Monitor`.
    pub const DEFAULT_MONITOR: u64 = 5_000_000_000;
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: 0,
            failure_action: FailureAction::Pause,
            monitor: 0,
            max_failure_ratio: Ratio(0.0),
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
    /// How `service rollback` (or a failed update with `failure_action: rollback`) rolls
    /// out the previous spec; none: Docker's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    #[serde(default)]
    pub endpoint_spec: EndpointSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    /// Docker's states: "updating", "paused", "completed", "rollback_started",
    /// "rollback_paused" or "rollback_completed".
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
    /// Docker's `IPRange`: task addresses and VIPs come from this part of the subnet only.
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
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
    /// Docker's `--internal`. shoal's overlays never give tasks a way out (only ingress
    /// does, through published ports), so every overlay behaves as internal; the flag is
    /// kept for inspect and for tools that read it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
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
    /// Defaulted so that specs from before autolock replay as "off".
    #[serde(default)]
    pub encryption_config: EncryptionConfig,
}

/// Docker's `Spec.EncryptionConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionConfig {
    /// Autolock: managers keep their keys locked under the unlock key on disk, and a
    /// restarted manager serves nothing until `swarm unlock`.
    pub auto_lock_managers: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: "default".into(),
            dispatcher_heartbeat_period: 5_000_000_000,
            node_cert_expiry: 90 * 24 * 3600 * 1_000_000_000,
            task_history_retention_limit: 5,
            encryption_config: EncryptionConfig::default(),
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
