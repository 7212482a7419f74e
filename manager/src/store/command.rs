//! Commands replicated through raft. Applying them is deterministic: ids and timestamps are
//! chosen by the proposer and travel inside the command, so every manager reaches the same
//! state from the same log.

use serde::{Deserialize, Serialize};
use shoal_api::objects::*;

/// One raft entry's payload: a command plus who is waiting for its result.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Proposal {
    /// Unique per proposing manager; the proposer answers its caller when it applies this.
    pub request_id: u64,
    pub command: Command,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Command {
    /// First entry of a new cluster: the cluster record, the first manager and ingress.
    Init(Box<InitCluster>),
    AddNode(Box<Node>),
    UpdateNodeSpec {
        id: String,
        spec: NodeSpec,
        now: String,
        /// The version the caller read (Engine API `?version=`); a newer node is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<u64>,
    },
    /// Reported state of a node (session opened, heartbeats stopped) and its description.
    NodeStatus {
        id: String,
        status: NodeStatus,
        description: Option<NodeDescription>,
        now: String,
    },
    RemoveNode {
        id: String,
        force: bool,
    },
    SetJoinToken {
        role: NodeRole,
        token: String,
        now: String,
    },
    UpdateClusterSpec {
        spec: ClusterSpec,
        now: String,
        /// The cluster version the change was made against (Engine API `?version=`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<u64>,
    },
    CreateNetwork {
        id: String,
        spec: NetworkSpec,
        now: String,
    },
    RemoveNetwork {
        id: String,
    },
    CreateService {
        id: String,
        spec: ServiceSpec,
        now: String,
    },
    UpdateService {
        id: String,
        version: u64,
        spec: ServiceSpec,
        now: String,
    },
    /// `service rollback`: the previous spec comes back and the current one becomes the
    /// previous; the tasks roll out with the rollback config.
    RollbackService {
        id: String,
        now: String,
    },
    RemoveService {
        id: String,
        now: String,
    },
    /// A service's registry credentials, sealed by the proposer (never in the clear here);
    /// proposed in a group with the create or update that carried them.
    SetRegistryAuth {
        service_id: String,
        sealed: String,
    },
    /// `secret create`: the data sealed by the proposer under the cluster data key (the id
    /// as associated data); the log never holds it in the clear.
    CreateSecret {
        id: String,
        spec: shoal_api::secrets::SecretSpec,
        sealed: String,
        now: String,
    },
    RemoveSecret {
        id: String,
    },
    CreateConfig {
        id: String,
        spec: shoal_api::secrets::ConfigSpec,
        now: String,
    },
    RemoveConfig {
        id: String,
    },
    /// Several commands applied in order, all or none: a stack deploy. The first refusal
    /// leaves the state as it was before the first of them.
    All(Vec<Command>),
    /// Orchestrator, scheduler and dispatcher changes to tasks, applied in order.
    Tasks {
        ops: Vec<TaskOp>,
        now: String,
    },
    /// The swarm's unlock key, sealed by the proposer under the cluster data key (`None`:
    /// autolock off). Refused unless it agrees with the spec's autolock setting, so it comes
    /// in a group after the spec change that turns autolock on or off, or alone to rotate.
    SetUnlockKey {
        sealed: Option<String>,
        now: String,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct InitCluster {
    pub cluster: Cluster,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
    pub node: Node,
    pub ingress_id: String,
    pub ingress_spec: NetworkSpec,
    /// Dynamic published-port range (30000-32767 unless a test narrows it).
    pub dynamic_ports: (u16, u16),
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum TaskOp {
    /// A new task for a slot (or a node, for global services); its addresses are allocated
    /// when the command is applied.
    Create(Box<Task>),
    Assign {
        id: String,
        node_id: String,
    },
    /// Ignored unless it moves the desired state forward.
    SetDesired {
        id: String,
        state: TaskState,
    },
    /// Ignored unless it moves the task forward (reports can arrive late or twice).
    Status {
        id: String,
        status: TaskStatus,
    },
    Delete {
        id: String,
    },
    /// Progress of a rolling update.
    ServiceUpdateStatus {
        service_id: String,
        status: Option<UpdateStatus>,
    },
    /// A rollout whose new tasks failed goes back to the previous spec by itself
    /// (`failure_action: rollback`). Ignored unless the service still runs `from` and is
    /// updating, so a repeated proposal rolls back once; a previous spec that is no longer
    /// valid pauses the update with the reason instead.
    Rollback {
        service_id: String,
        from: Version,
        message: String,
    },
}
