//! The cluster API: what a manager answers. The CLI sends these to its local `shoald`, which
//! serves them itself on a manager and refuses them on a worker, as Docker does.

use crate::objects::*;
use crate::registry_auth::RegistryAuth;
use crate::secrets::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Op", content = "Args")]
pub enum ControlRequest {
    SwarmInspect,
    SwarmUpdate(SwarmUpdate),
    JoinToken {
        role: NodeRole,
        rotate: bool,
    },
    NodeList,
    /// By id, id prefix or hostname.
    NodeInspect {
        node: String,
    },
    NodeUpdate(NodeUpdate),
    NodeRemove {
        node: String,
        force: bool,
    },
    ServiceCreate {
        spec: ServiceSpec,
        /// `--with-registry-auth`: the CLI's credentials for the image's registry. The
        /// manager seals them before they enter raft; only nodes with a task get them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registry_auth: Option<RegistryAuth>,
    },
    ServiceList,
    /// By id, id prefix or name.
    ServiceInspect {
        service: String,
    },
    /// Replaces the spec; `version` must be the one read (optimistic concurrency, as Docker).
    ServiceUpdate {
        service: String,
        version: u64,
        spec: ServiceSpec,
        /// As for create; `None` keeps the credentials the service has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registry_auth: Option<RegistryAuth>,
    },
    /// Puts the previous spec back (`docker service rollback`, `service update --rollback`):
    /// spec and previous spec swap, and the tasks roll out with the rollback config.
    /// Answered `Done`; refused when the service has no previous spec.
    ServiceRollback {
        service: String,
    },
    ServiceRemove {
        service: String,
    },
    NetworkCreate {
        spec: NetworkSpec,
    },
    NetworkList,
    NetworkInspect {
        network: String,
    },
    NetworkRemove {
        network: String,
    },
    /// A stack's networks and services, applied all together or not at all: networks that
    /// do not exist yet are created, services are created or, where one of that name
    /// exists, updated when their spec differs. Attachment targets may name a network of
    /// this request (which has no id yet) or any existing network by id or name.
    StackDeploy {
        networks: Vec<NetworkSpec>,
        services: Vec<ServiceSpec>,
        /// `--with-registry-auth`: credentials by service name, for the services whose
        /// image's registry the CLI has credentials for; the others keep theirs.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        registry_auth: BTreeMap<String, RegistryAuth>,
        /// The stack's secrets (`<stack>_<name>`): created when missing, kept when one of
        /// that name holds the same data, refused when its data differs (secrets are
        /// immutable, as in Docker).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<StackSecret>,
        /// The same for configs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        configs: Vec<ConfigSpec>,
    },
    /// `secret create`: the data travels to the manager only, which seals it before it
    /// enters raft.
    SecretCreate {
        spec: SecretSpec,
        data: SensitiveBytes,
    },
    SecretList,
    /// By id, id prefix or name.
    SecretInspect {
        secret: String,
    },
    /// Refused while a service references it.
    SecretRemove {
        secret: String,
    },
    ConfigCreate {
        spec: ConfigSpec,
    },
    ConfigList,
    ConfigInspect {
        config: String,
    },
    ConfigRemove {
        config: String,
    },
    /// Tasks, optionally only one service's or one node's.
    TaskList {
        service: Option<String>,
        node: Option<String>,
    },
    /// `swarm unlock-key [--rotate]`: the swarm's unlock key (empty when autolock is off),
    /// after replacing it with a new one when `rotate`. Answered `UnlockKey`.
    UnlockKey {
        rotate: bool,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SwarmUpdate {
    /// The swarm version the change was made against (Engine API `?version=`); when given,
    /// a swarm changed since is refused as "update out of sequence".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub cert_expiry_ns: Option<u64>,
    pub heartbeat_period_ns: Option<u64>,
    pub task_history_limit: Option<u64>,
    /// `--autolock=true|false`; turning it on makes an unlock key, turning it off drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autolock: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeUpdate {
    pub node: String,
    /// The node version the change was made against (the Engine API's `?version=`); when
    /// given, a node changed since is refused as "update out of sequence".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub availability: Option<Availability>,
    pub role: Option<NodeRole>,
    pub labels_add: BTreeMap<String, String>,
    pub labels_rm: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Kind", content = "Value")]
pub enum ControlResponse {
    Done,
    Created {
        id: String,
    },
    Swarm(Box<Cluster>),
    Token(String),
    Nodes(Vec<Node>),
    Node(Box<Node>),
    Services(Vec<ServiceView>),
    Service(Box<ServiceView>),
    Networks(Vec<Network>),
    Network(Box<Network>),
    Tasks(Vec<TaskView>),
    Stack(StackDeployed),
    Secrets(Vec<Secret>),
    Secret(Box<Secret>),
    Configs(Vec<Config>),
    Config(Box<Config>),
    /// `SWMKEY-1-...`, or empty when the swarm has none.
    UnlockKey(crate::join::KeyText),
}

/// A secret of a stack deploy, with its data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StackSecret {
    pub spec: SecretSpec,
    pub data: SensitiveBytes,
}

/// What a stack deploy changed, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StackDeployed {
    pub created_networks: Vec<String>,
    /// Name and new id.
    pub created_services: Vec<(String, String)>,
    /// Name and id.
    pub updated_services: Vec<(String, String)>,
    #[serde(default)]
    pub created_secrets: Vec<String>,
    #[serde(default)]
    pub created_configs: Vec<String>,
}

/// A service with the task counts `service ls` shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    pub service_status: ServiceStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    pub running_tasks: u64,
    pub desired_tasks: u64,
}

/// A task with the names `service ps` prints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    pub name: String,
    pub service_name: String,
    pub node_name: String,
}
