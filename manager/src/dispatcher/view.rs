//! What one node needs to know, computed from the cluster state, and the difference between
//! two such views, which is what a session streams after its first snapshot.

use crate::ca::DataKey;
use crate::store::ClusterState;
use shoal_api::dispatch::*;
use shoal_api::objects::*;
use shoal_api::registry_auth::RegistryAuth;
use shoal_api::secrets::{Config, SecretPayload, SensitiveBytes};
use std::collections::{BTreeMap, BTreeSet};

/// Tasks a node must act on: the ones it should run, and the ones it should stop.
fn node_tasks<'a>(state: &'a ClusterState, node_id: &'a str) -> impl Iterator<Item = &'a Task> {
    state.tasks.values().filter(move |t| {
        t.node_id == node_id
            && !(t.status.state.is_terminal() && t.desired_state >= TaskState::Shutdown)
    })
}

/// `data_key` opens the registry credentials of the services with a task on the node; only
/// those services' credentials go into the node's view.
pub fn node_view(state: &ClusterState, node_id: &str, data_key: Option<&DataKey>) -> NodeView {
    let tasks: Vec<Task> = node_tasks(state, node_id).cloned().collect();
    let ingress_id = state.ingress().map(|n| n.id.clone());
    let mut network_ids: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t.desired_state <= TaskState::Running)
        .flat_map(|t| t.networks_attachments.iter().map(|a| a.network_id.clone()))
        .collect();
    if let Some(id) = &ingress_id {
        network_ids.insert(id.clone());
    }

    // Nodes with live tasks on each network: the VXLAN peers.
    let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.node_id.is_empty()
            || t.status.state.is_terminal()
            || t.desired_state > TaskState::Running
        {
            continue;
        }
        for a in &t.networks_attachments {
            members.entry(&a.network_id).or_default().insert(&t.node_id);
        }
    }
    let networks = network_ids
        .iter()
        .filter_map(|id| state.networks.get(id))
        .map(|net| {
            let is_ingress = Some(&net.id) == ingress_id.as_ref();
            let peer_ids: Vec<&str> = if is_ingress {
                state.nodes.keys().map(|k| k.as_str()).collect()
            } else {
                members
                    .get(net.id.as_str())
                    .map(|m| m.iter().copied().collect())
                    .unwrap_or_default()
            };
            let mut peers: Vec<NetworkPeer> = peer_ids
                .into_iter()
                .filter(|id| *id != node_id)
                .filter_map(|id| state.nodes.get(id))
                .filter(|n| !n.status.addr.is_empty())
                .map(|n| NetworkPeer {
                    node_id: n.id.clone(),
                    addr: n.status.addr.clone(),
                    endpoint: if is_ingress {
                        n.ingress_addr.clone()
                    } else {
                        String::new()
                    },
                })
                .collect();
            peers.sort();
            NetworkView {
                network: net.clone(),
                peers,
            }
        })
        .collect();

    // Every service reachable from this node's networks (and every ingress-published one).
    let endpoints = state
        .services
        .values()
        .filter(|s| {
            s.endpoint
                .virtual_ips
                .iter()
                .any(|v| network_ids.contains(&v.network_id))
                || s.spec
                    .task_template
                    .networks
                    .iter()
                    .any(|a| network_ids.contains(&a.target))
                || ClusterState::uses_ingress(&s.spec)
        })
        .map(|s| {
            let mut backends: Vec<Backend> = state
                .service_tasks(&s.id)
                .filter(|t| {
                    t.status.state == TaskState::Running && t.desired_state == TaskState::Running
                })
                .flat_map(|t| {
                    let name = t.name(&s.spec.name);
                    t.networks_attachments.iter().flat_map(move |a| {
                        let name = name.clone();
                        a.addresses.iter().map(move |addr| Backend {
                            task_id: t.id.clone(),
                            task_name: name.clone(),
                            node_id: t.node_id.clone(),
                            network_id: a.network_id.clone(),
                            addr: addr.clone(),
                            state: t.status.state,
                        })
                    })
                })
                .collect();
            backends.sort();
            ServiceEndpoint {
                service_id: s.id.clone(),
                service_name: s.spec.name.clone(),
                mode: s.spec.endpoint_spec.mode,
                ports: s.endpoint.ports.clone(),
                virtual_ips: s.endpoint.virtual_ips.clone(),
                backends,
                aliases: s
                    .spec
                    .task_template
                    .networks
                    .iter()
                    .flat_map(|a| a.aliases.iter().map(|al| (a.target.clone(), al.clone())))
                    .collect(),
                session_affinity: s.spec.endpoint_spec.session_affinity,
            }
        })
        .collect();

    let local_services: BTreeSet<&str> = tasks.iter().map(|t| t.service_id.as_str()).collect();
    let services = local_services
        .into_iter()
        .filter_map(|id| state.services.get(id))
        .map(|s| ServiceAnnotations {
            service_id: s.id.clone(),
            name: s.spec.name.clone(),
            labels: s.spec.labels.clone(),
            registry_auth: state
                .registry_auth
                .get(&s.id)
                .and_then(|sealed| open_registry_auth(data_key, &s.id, &s.spec.name, sealed)),
        })
        .collect();
    let (secrets, configs) = files_for(state, &tasks, data_key);
    let managers = state.manager_peers();
    let cluster = state.cluster.as_ref().map(|c| &c.cluster);
    NodeView {
        node: state.nodes.get(node_id).cloned(),
        tasks,
        networks,
        endpoints,
        managers,
        heartbeat_period_ns: cluster
            .map(|c| c.spec.dispatcher_heartbeat_period)
            .unwrap_or(5_000_000_000),
        data_path_port: cluster.map(|c| c.data_path_port).unwrap_or(4789),
        services,
        secrets,
        configs,
    }
}

/// The secrets (opened) and configs that the node's tasks which run or are about to run
/// use; nothing for tasks that are stopping or ended, so a node holds a secret only while
/// it needs it. A secret that does not open here is left out and logged: the task then
/// fails on the node with a message that names it.
fn files_for(
    state: &ClusterState,
    tasks: &[Task],
    data_key: Option<&DataKey>,
) -> (Vec<SecretPayload>, Vec<Config>) {
    let mut secret_ids = BTreeSet::new();
    let mut config_ids = BTreeSet::new();
    for t in tasks
        .iter()
        .filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal())
    {
        let c = &t.spec.container_spec;
        secret_ids.extend(c.secrets.iter().map(|r| r.secret_id.as_str()));
        config_ids.extend(c.configs.iter().map(|r| r.config_id.as_str()));
    }
    let secrets = secret_ids
        .into_iter()
        .filter_map(|id| {
            let secret = state.secrets.get(id)?;
            let sealed = state.secret_data.get(id)?;
            // Views are rebuilt on every change: say it once per manager, not per rebuild.
            use std::sync::atomic::{AtomicBool, Ordering};
            static WARNED: AtomicBool = AtomicBool::new(false);
            let warn_once = |why: &str| {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(secret = %secret.spec.name, "{why}; tasks that use it fail naming it");
                }
            };
            let Some(key) = data_key else {
                warn_once("a task needs this secret but this manager has no cluster data key");
                return None;
            };
            match key.open_b64(id, sealed) {
                Ok(plain) => Some(SecretPayload {
                    id: id.to_string(),
                    spec: secret.spec.clone(),
                    data: SensitiveBytes(plain),
                }),
                Err(e) => {
                    warn_once(&e.to_string());
                    None
                }
            }
        })
        .collect();
    let configs = config_ids
        .into_iter()
        .filter_map(|id| state.configs.get(id).cloned())
        .collect();
    (secrets, configs)
}

/// A service's sealed credentials, opened; `None`, logged once per manager, when this
/// manager has no data key or the value does not open under it.
fn open_registry_auth(
    data_key: Option<&DataKey>,
    service_id: &str,
    service: &str,
    sealed: &str,
) -> Option<RegistryAuth> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let warn_once = |why: &str| {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(service = %service, service_id = %service_id, "{why}; its nodes pull the image without registry credentials");
        }
    };
    let Some(key) = data_key else {
        warn_once(
            "service has registry credentials but this manager has no cluster data key (a cluster made before data keys)",
        );
        return None;
    };
    match key.open_text(service_id, sealed) {
        Ok(plain) => Some(RegistryAuth::from_encoded(plain.to_string())),
        Err(e) => {
            warn_once(&e.to_string());
            None
        }
    }
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &NodeView, new: &NodeView) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.node != new.node
        && let Some(n) = &new.node
    {
        changes.push(Change::Node(Box::new(n.clone())));
    }
    diff_lists(
        &old.tasks,
        &new.tasks,
        |t| &t.id,
        &mut changes,
        |t| Change::TaskUpsert(Box::new(t.clone())),
        Change::TaskRemove,
    );
    diff_lists(
        &old.networks,
        &new.networks,
        |n| &n.network.id,
        &mut changes,
        |n| Change::NetworkUpsert(Box::new(n.clone())),
        Change::NetworkRemove,
    );
    diff_lists(
        &old.endpoints,
        &new.endpoints,
        |e| &e.service_id,
        &mut changes,
        |e| Change::EndpointUpsert(Box::new(e.clone())),
        Change::EndpointRemove,
    );
    diff_lists(
        &old.services,
        &new.services,
        |s| &s.service_id,
        &mut changes,
        |s| Change::ServiceUpsert(s.clone()),
        Change::ServiceRemove,
    );
    diff_lists(
        &old.secrets,
        &new.secrets,
        |s| &s.id,
        &mut changes,
        |s| Change::SecretUpsert(Box::new(s.clone())),
        Change::SecretRemove,
    );
    diff_lists(
        &old.configs,
        &new.configs,
        |c| &c.id,
        &mut changes,
        |c| Change::ConfigUpsert(Box::new(c.clone())),
        Change::ConfigRemove,
    );
    if old.managers != new.managers {
        changes.push(Change::Managers(new.managers.clone()));
    }
    if old.heartbeat_period_ns != new.heartbeat_period_ns {
        changes.push(Change::HeartbeatPeriod(new.heartbeat_period_ns));
    }
    changes
}

fn diff_lists<T: PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &String,
    out: &mut Vec<Change>,
    upsert: impl Fn(&T) -> Change,
    remove: impl Fn(String) -> Change,
) {
    let old_map: BTreeMap<&String, &T> = old.iter().map(|x| (key(x), x)).collect();
    let new_keys: BTreeSet<&String> = new.iter().map(&key).collect();
    for item in new {
        if old_map.get(key(item)).is_none_or(|o| *o != item) {
            out.push(upsert(item));
        }
    }
    for k in old_map.keys() {
        if !new_keys.contains(k) {
            out.push(remove((*k).clone()));
        }
    }
}
