//! The cluster API: translates requests into reads of the local replica or proposals through
//! raft. Business rules live in the store's `apply`; this layer only resolves names, fills in
//! ids and timestamps, and shapes answers.

use crate::ca::{DataKey, JoinToken, RootCa};
use crate::consensus::{ProposeError, RaftHandle};
use crate::ids::new_id;
use crate::scheduler::is_live;
use crate::store::{Applied, ClusterState, Command, StoreError, lookup};
use shoal_api::control::*;
use shoal_api::now_rfc3339;
use shoal_api::objects::*;
use shoal_api::registry_auth::RegistryAuth;
use shoal_api::wire::ErrorKind;
use tonic::Status;

pub mod autolock;

pub fn store_status(e: &StoreError) -> Status {
    e.kind().status(e.to_string())
}

pub fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(e) => store_status(&e),
        ProposeError::NoQuorum { .. } | ProposeError::Timeout { .. } | ProposeError::Stopped => {
            ErrorKind::Unavailable.status(e.to_string())
        }
        ProposeError::ConfChange(_) => ErrorKind::Precondition.status(e.to_string()),
    }
}

#[derive(Clone)]
pub struct ControlApi {
    raft: RaftHandle,
    /// Seals `--with-registry-auth` credentials before they are proposed.
    data_key: Option<DataKey>,
}

impl ControlApi {
    pub fn new(raft: RaftHandle, data_key: Option<DataKey>) -> Self {
        ControlApi { raft, data_key }
    }

    /// `command`, grouped with the service's credentials sealed under the data key when the
    /// request carried some: raft only ever sees the sealed bytes.
    fn with_registry_auth(
        &self,
        command: Command,
        service_id: &str,
        auth: Option<RegistryAuth>,
    ) -> Result<Command, Status> {
        match auth {
            None => Ok(command),
            Some(auth) => Ok(Command::All(vec![
                command,
                self.seal_registry_auth(service_id, &auth)?,
            ])),
        }
    }

    fn seal_registry_auth(&self, service_id: &str, auth: &RegistryAuth) -> Result<Command, Status> {
        let key = self.data_key.as_ref().ok_or_else(|| {
            ErrorKind::Precondition.status(
                "--with-registry-auth: this manager has no cluster data key (the swarm was initialized before shoal had one), so it can't keep registry credentials; run without --with-registry-auth",
            )
        })?;
        Ok(Command::SetRegistryAuth {
            service_id: service_id.to_string(),
            sealed: key.seal_text(service_id, auth.as_str()),
        })
    }

    async fn propose(&self, command: Command) -> Result<Applied, Status> {
        self.raft.propose(command).await.map_err(propose_status)
    }

    pub async fn handle(&self, req: ControlRequest) -> Result<ControlResponse, Status> {
        use ControlRequest as R;
        match req {
            R::SwarmInspect => {
                let state = self.raft.state();
                let rec = state.record().map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Swarm(Box::new(rec.cluster.clone())))
            }
            R::SwarmUpdate(update) => {
                let mut spec = {
                    let state = self.raft.state();
                    state
                        .record()
                        .map_err(|e| store_status(&e))?
                        .cluster
                        .spec
                        .clone()
                };
                if let Some(ns) = update.cert_expiry_ns {
                    if ns < 60_000_000_000 {
                        return Err(ErrorKind::Invalid.status(
                            "--cert-expiry must be at least 1m so nodes can renew in time",
                        ));
                    }
                    spec.node_cert_expiry = ns;
                }
                if let Some(ns) = update.heartbeat_period_ns {
                    if ns < 500_000_000 {
                        return Err(ErrorKind::Invalid
                            .status("--dispatcher-heartbeat must be at least 500ms"));
                    }
                    spec.dispatcher_heartbeat_period = ns;
                }
                if let Some(n) = update.task_history_limit {
                    spec.task_history_retention_limit = n;
                }
                let autolock = update
                    .autolock
                    .filter(|&on| on != spec.encryption_config.auto_lock_managers);
                if let Some(on) = autolock {
                    spec.encryption_config.auto_lock_managers = on;
                }
                let mut command = Command::UpdateClusterSpec {
                    spec,
                    now: now_rfc3339(),
                    expected: update.version,
                };
                if let Some(on) = autolock {
                    command = self.autolock_command(command, on)?;
                }
                self.propose(command).await?;
                Ok(ControlResponse::Done)
            }
            R::JoinToken { role, rotate } => {
                if rotate {
                    let ca_pem = {
                        let state = self.raft.state();
                        state
                            .record()
                            .map_err(|e| store_status(&e))?
                            .cluster
                            .tls_info
                            .clone()
                    };
                    let ca = RootCa::from_pem(&ca_pem, None)
                        .map_err(|e| ErrorKind::Internal.status(e.to_string()))?;
                    let token = JoinToken::generate(&ca).to_string();
                    self.propose(Command::SetJoinToken {
                        role,
                        token,
                        now: now_rfc3339(),
                    })
                    .await?;
                }
                let state = self.raft.state();
                let rec = state.record().map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Token(match role {
                    NodeRole::Worker => rec.worker_token.clone(),
                    NodeRole::Manager => rec.manager_token.clone(),
                }))
            }
            R::NodeList => {
                let state = self.raft.state();
                let nodes = state.nodes.values().map(|n| self.node_view(n)).collect();
                Ok(ControlResponse::Nodes(nodes))
            }
            R::NodeInspect { node } => {
                let state = self.raft.state();
                let n = lookup(&state.nodes, &node).map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Node(Box::new(self.node_view(n))))
            }
            R::NodeUpdate(update) => {
                let (id, mut spec) = {
                    let state = self.raft.state();
                    let n = lookup(&state.nodes, &update.node).map_err(|e| store_status(&e))?;
                    (n.id.clone(), n.spec.clone())
                };
                if let Some(a) = update.availability {
                    spec.availability = a;
                }
                if let Some(r) = update.role {
                    if r == NodeRole::Worker && spec.role == NodeRole::Manager {
                        self.check_demote_keeps_quorum(&id)?;
                    }
                    spec.role = r;
                }
                for k in &update.labels_rm {
                    spec.labels.remove(k);
                }
                spec.labels.extend(update.labels_add.clone());
                self.propose(Command::UpdateNodeSpec {
                    id,
                    spec,
                    now: now_rfc3339(),
                    expected: update.version,
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            R::NodeRemove { node, force } => {
                let id = self.resolve_node(&node)?;
                self.propose(Command::RemoveNode { id, force }).await?;
                Ok(ControlResponse::Done)
            }
            R::ServiceCreate {
                spec,
                registry_auth,
            } => {
                templates_expand(&spec)?;
                reservation_fits(&self.raft.state(), &spec)?;
                let id = new_id();
                let create = Command::CreateService {
                    id: id.clone(),
                    spec,
                    now: now_rfc3339(),
                };
                self.propose(self.with_registry_auth(create, &id, registry_auth)?)
                    .await?;
                Ok(ControlResponse::Created { id })
            }
            R::ServiceList => {
                let state = self.raft.state();
                let list = state
                    .services
                    .values()
                    .map(|s| service_view(&state, s))
                    .collect();
                Ok(ControlResponse::Services(list))
            }
            R::ServiceInspect { service } => {
                let state = self.raft.state();
                let s = lookup(&state.services, &service).map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Service(Box::new(service_view(&state, s))))
            }
            R::ServiceUpdate {
                service,
                version,
                spec,
                registry_auth,
            } => {
                templates_expand(&spec)?;
                reservation_fits(&self.raft.state(), &spec)?;
                let id = self.resolve(|s| &s.services, &service)?;
                let update = Command::UpdateService {
                    id: id.clone(),
                    version,
                    spec,
                    now: now_rfc3339(),
                };
                self.propose(self.with_registry_auth(update, &id, registry_auth)?)
                    .await?;
                Ok(ControlResponse::Done)
            }
            R::ServiceRollback { service } => {
                let id = self.resolve(|s| &s.services, &service)?;
                self.propose(Command::RollbackService {
                    id,
                    now: now_rfc3339(),
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            R::ServiceRemove { service } => {
                let id = self.resolve(|s| &s.services, &service)?;
                self.propose(Command::RemoveService {
                    id,
                    now: now_rfc3339(),
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            R::NetworkCreate { spec } => {
                let id = new_id();
                self.propose(Command::CreateNetwork {
                    id: id.clone(),
                    spec,
                    now: now_rfc3339(),
                })
                .await?;
                Ok(ControlResponse::Created { id })
            }
            R::NetworkList => {
                let state = self.raft.state();
                Ok(ControlResponse::Networks(
                    state.networks.values().cloned().collect(),
                ))
            }
            R::NetworkInspect { network } => {
                let state = self.raft.state();
                let n = lookup(&state.networks, &network).map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Network(Box::new(n.clone())))
            }
            R::NetworkRemove { network } => {
                let id = self.resolve(|s| &s.networks, &network)?;
                self.propose(Command::RemoveNetwork { id }).await?;
                Ok(ControlResponse::Done)
            }
            R::SecretCreate { spec, data } => {
                check_secret_create(&spec, data.as_slice())?;
                let key = self.secret_key(&spec.name)?;
                let id = new_id();
                self.propose(Command::CreateSecret {
                    sealed: key.seal_b64(&id, data.as_slice()),
                    id: id.clone(),
                    spec,
                    now: now_rfc3339(),
                })
                .await?;
                Ok(ControlResponse::Created { id })
            }
            R::SecretList => {
                let state = self.raft.state();
                Ok(ControlResponse::Secrets(
                    state.secrets.values().cloned().collect(),
                ))
            }
            R::SecretInspect { secret } => {
                let state = self.raft.state();
                let s = lookup(&state.secrets, &secret).map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Secret(Box::new(s.clone())))
            }
            R::SecretRemove { secret } => {
                let id = self.resolve(|s| &s.secrets, &secret)?;
                self.propose(Command::RemoveSecret { id }).await?;
                Ok(ControlResponse::Done)
            }
            R::ConfigCreate { spec } => {
                check_config_create(&spec)?;
                let id = new_id();
                self.propose(Command::CreateConfig {
                    id: id.clone(),
                    spec,
                    now: now_rfc3339(),
                })
                .await?;
                Ok(ControlResponse::Created { id })
            }
            R::ConfigList => {
                let state = self.raft.state();
                Ok(ControlResponse::Configs(
                    state.configs.values().cloned().collect(),
                ))
            }
            R::ConfigInspect { config } => {
                let state = self.raft.state();
                let c = lookup(&state.configs, &config).map_err(|e| store_status(&e))?;
                Ok(ControlResponse::Config(Box::new(c.clone())))
            }
            R::ConfigRemove { config } => {
                let id = self.resolve(|s| &s.configs, &config)?;
                self.propose(Command::RemoveConfig { id }).await?;
                Ok(ControlResponse::Done)
            }
            R::StackDeploy {
                networks,
                services,
                registry_auth,
                secrets,
                configs,
            } => {
                for s in &secrets {
                    check_secret_create(&s.spec, s.data.as_slice())?;
                }
                for c in &configs {
                    check_config_create(c)?;
                }
                {
                    let state = self.raft.state();
                    for spec in &services {
                        templates_expand(spec)?;
                        reservation_fits(&state, spec)?;
                    }
                }
                let (mut commands, done, ids) = {
                    let state = self.raft.state();
                    let files = crate::stack::Files {
                        secrets,
                        configs,
                        data_key: self.data_key.as_ref(),
                    };
                    let (commands, done) = crate::stack::plan_with_files(
                        &state,
                        files,
                        networks,
                        services,
                        &now_rfc3339(),
                    )
                    .map_err(|e| store_status(&e))?;
                    let ids = crate::stack::service_ids(&state, &done);
                    (commands, done, ids)
                };
                for (name, auth) in &registry_auth {
                    let id = ids.get(name).ok_or_else(|| {
                        ErrorKind::Invalid.status(format!(
                            "registry credentials for service {name}, which is not in this stack"
                        ))
                    })?;
                    commands.push(self.seal_registry_auth(id, auth)?);
                }
                if !commands.is_empty() {
                    self.propose(Command::All(commands)).await?;
                }
                Ok(ControlResponse::Stack(done))
            }
            R::TaskList { service, node } => {
                let state = self.raft.state();
                let service_id = match service {
                    Some(s) => Some(
                        lookup(&state.services, &s)
                            .map_err(|e| store_status(&e))?
                            .id
                            .clone(),
                    ),
                    None => None,
                };
                let node_id = match node {
                    Some(n) => Some(
                        lookup(&state.nodes, &n)
                            .map_err(|e| store_status(&e))?
                            .id
                            .clone(),
                    ),
                    None => None,
                };
                let tasks = state
                    .tasks
                    .values()
                    .filter(|t| service_id.as_ref().is_none_or(|s| &t.service_id == s))
                    .filter(|t| node_id.as_ref().is_none_or(|n| &t.node_id == n))
                    .map(|t| task_view(&state, t))
                    .collect();
                Ok(ControlResponse::Tasks(tasks))
            }
            R::UnlockKey { rotate } => self.unlock_key(rotate).await,
        }
    }

    /// The data key secrets are sealed under; refused clearly on a cluster without one.
    fn secret_key(&self, name: &str) -> Result<&DataKey, Status> {
        self.data_key.as_ref().ok_or_else(|| {
            ErrorKind::Precondition.status(format!(
                "secret {name}: this manager has no cluster data key (the swarm was initialized before shoal had one), so it can't keep secrets; initialize a new swarm to use secrets"
            ))
        })
    }

    /// The id of the object `key` names (id, name or id prefix) in one of the state's maps.
    fn resolve<T: crate::store::Named>(
        &self,
        map: impl Fn(&ClusterState) -> &std::collections::BTreeMap<String, T>,
        key: &str,
    ) -> Result<String, Status> {
        let state = self.raft.state();
        Ok(lookup(map(&state), key)
            .map_err(|e| store_status(&e))?
            .id()
            .to_string())
    }

    fn resolve_node(&self, key: &str) -> Result<String, Status> {
        self.resolve(|s| &s.nodes, key)
    }

    /// Refuses a demotion that would leave the remaining managers without a reachable majority.
    fn check_demote_keeps_quorum(&self, node_id: &str) -> Result<(), Status> {
        let state = self.raft.state();
        let node = &state.nodes[node_id];
        let remaining: Vec<u64> = self
            .raft
            .voters()
            .into_iter()
            .filter(|v| *v != node.raft_id)
            .collect();
        let reachable = remaining
            .iter()
            .filter(|v| self.raft.peer_reachable(**v))
            .count();
        let needed = remaining.len() / 2 + 1;
        if remaining.is_empty() || reachable < needed {
            return Err(ErrorKind::Precondition.status(format!(
                "can't demote node {}: the {} remaining managers would have {reachable} reachable, {needed} needed for quorum",
                node.hostname(),
                remaining.len(),
            )));
        }
        Ok(())
    }

    /// A node as shown to users: leader and reachability filled in from raft.
    pub fn node_view(&self, n: &Node) -> Node {
        let mut n = n.clone();
        if let Some(ms) = n.manager_status.as_mut() {
            ms.leader = n.raft_id != 0 && n.raft_id == self.raft.leader_id();
            let reachable = self.raft.peer_reachable(n.raft_id);
            ms.reachability = if reachable {
                "reachable"
            } else {
                "unreachable"
            }
            .into();
        }
        n
    }
}

/// Docker's checks of a new secret, before its data is sealed.
fn check_secret_create(spec: &shoal_api::secrets::SecretSpec, data: &[u8]) -> Result<(), Status> {
    use shoal_api::secrets::{Kind, check_new};
    check_new(
        Kind::Secret,
        &spec.name,
        spec.driver.as_ref(),
        spec.templating.as_ref(),
        data,
    )
    .map_err(|e| ErrorKind::Invalid.status(e))
}

/// Docker's checks of a new config; a templated one must parse as a service template.
fn check_config_create(spec: &shoal_api::secrets::ConfigSpec) -> Result<(), Status> {
    use shoal_api::secrets::{Kind, check_new};
    check_new(
        Kind::Config,
        &spec.name,
        None,
        spec.templating.as_ref(),
        &spec.data,
    )
    .map_err(|e| ErrorKind::Invalid.status(e))
}

/// Refuses service templates the agents could not expand (every field
/// `shoal_api::template::for_each_field` names). Checked here, before proposing, not in the store's apply: an entry committed
/// by an older version (when `{{` in an env value meant nothing) must replay the same.
pub fn templates_expand(spec: &ServiceSpec) -> Result<(), Status> {
    shoal_api::template::check_container_spec(&spec.task_template.container_spec).map_err(
        |(field, e)| {
            ErrorKind::Invalid.status(format!(
                "service {}: {}: {e}",
                spec.name,
                field.spec_field()
            ))
        },
    )
}

/// Refuses a spec whose reservation is more than any node of the cluster has in all: its
/// tasks could only ever be pending. (A reservation that fits some node but not its free
/// room now is accepted, and its tasks wait with the scheduler's reason, as in Docker.)
/// Nodes that report no resources (older agents) make the check stand aside.
pub fn reservation_fits(state: &ClusterState, spec: &ServiceSpec) -> Result<(), Status> {
    let want = &spec.task_template.resources.reservations;
    if want.is_empty() || state.nodes.is_empty() {
        return Ok(());
    }
    let sizes: Vec<&Resources> = state
        .nodes
        .values()
        .map(|n| &n.description.resources)
        .collect();
    if sizes
        .iter()
        .any(|r| r.nano_cpus == 0 || r.memory_bytes == 0)
    {
        return Ok(());
    }
    if sizes
        .iter()
        .any(|r| r.nano_cpus >= want.nano_cpus && r.memory_bytes >= want.memory_bytes)
    {
        return Ok(());
    }
    let cpus = |n: i64| format!("{} CPUs", crate::store::cpus(n));
    let gib = |b: i64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    let largest_cpu = sizes.iter().map(|r| r.nano_cpus).max().unwrap_or(0);
    let largest_mem = sizes.iter().map(|r| r.memory_bytes).max().unwrap_or(0);
    Err(ErrorKind::Invalid.status(format!(
            "service {}: it reserves {} and {} of memory per task, more than any of the {} nodes has (at most {} and {}); lower --reserve-cpu/--reserve-memory (deploy.resources.reservations) or add a larger node",
            spec.name,
            cpus(want.nano_cpus),
            gib(want.memory_bytes),
            sizes.len(),
            cpus(largest_cpu),
            gib(largest_mem),
    )))
}

pub fn service_view(state: &ClusterState, s: &Service) -> ServiceView {
    let tasks: Vec<&Task> = state.service_tasks(&s.id).collect();
    let running = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .count() as u64;
    let desired = match s.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global {} => tasks.iter().filter(|t| is_live(t)).count() as u64,
    };
    ServiceView {
        service: s.clone(),
        service_status: ServiceStatus {
            running_tasks: running,
            desired_tasks: desired,
        },
    }
}

pub fn task_view(state: &ClusterState, t: &Task) -> TaskView {
    let service_name = state
        .services
        .get(&t.service_id)
        .map(|s| s.spec.name.clone())
        .unwrap_or_default();
    TaskView {
        name: t.name(&service_name),
        node_name: state
            .nodes
            .get(&t.node_id)
            .map(|n| n.hostname().to_string())
            .unwrap_or_default(),
        service_name,
        task: t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "Name": "web",
            "TaskTemplate": {"ContainerSpec": {"Image": "img"}, "Runtime": "docker"},
            "Mode": {"Replicated": {"Replicas": 1}}
        }))
        .unwrap()
    }

    #[test]
    fn templates_are_checked_before_proposing() {
        let mut s = spec();
        s.task_template.container_spec.hostname = "{{.Service.Name}}-{{.Task.Slot}}".into();
        assert!(templates_expand(&s).is_ok());
        s.task_template.container_spec.hostname = "{{.Task.Slott}}".into();
        let e = templates_expand(&s).unwrap_err();
        assert!(
            e.message()
                .starts_with("service web: ContainerSpec.Hostname (--hostname): template"),
            "{}",
            e.message()
        );
        let mut s = spec();
        s.task_template.container_spec.env =
            vec![r#"X={{define "a"}}{{template "a" .}}{{end}}{{template "a" .}}"#.into()];
        let e = templates_expand(&s).unwrap_err();
        assert!(
            e.message().contains("not allowed in service templates"),
            "{}",
            e.message()
        );
    }
}
