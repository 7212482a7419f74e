//! The view a session last sent, kept by part so that a change looks only at the parts it
//! names: each is compared with what the index says it is now, and the differences are the
//! delta. Parts are shared with the index and with other sessions' views.

use super::index::{Key, Part, ViewIndex};
use shoal_api::dispatch::*;
use shoal_api::objects::{Network, Node, Task};
use shoal_api::secrets::{Config, SecretPayload};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct SessionView {
    node_id: String,
    /// The raft index of the state this view shows.
    pub index: u64,
    node: Option<Arc<Node>>,
    tasks: BTreeMap<String, Arc<Task>>,
    networks: BTreeMap<String, (Arc<Network>, Arc<Vec<NetworkPeer>>)>,
    endpoints: BTreeMap<String, Arc<ServiceEndpoint>>,
    services: BTreeMap<String, Arc<ServiceAnnotations>>,
    secrets: BTreeMap<String, Arc<SecretPayload>>,
    configs: BTreeMap<String, Arc<Config>>,
    managers: Arc<Vec<ManagerPeer>>,
    heartbeat_period_ns: u64,
    data_path_port: u16,
    /// How many endpoints of this view have each task as a backend: what the node may
    /// balance to, kept as endpoints come and go instead of walked per delta.
    backends: HashMap<String, usize>,
}

/// The backends a delta added to and removed from a view (task ids).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackendChange {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
}

impl SessionView {
    /// `node`'s whole view as the index has it: a session's first snapshot.
    pub fn full(index: &ViewIndex, node: &str) -> SessionView {
        let mut v = SessionView {
            node_id: node.to_string(),
            index: index.index,
            ..Default::default()
        };
        let keys = index.keys(node);
        v.update(index, &keys);
        v
    }

    pub fn node_exists(&self) -> bool {
        self.node.is_some()
    }

    /// Task ids this view balances to or resolves.
    pub fn backends(&self) -> impl Iterator<Item = &String> {
        self.backends.keys()
    }

    /// Looks again at `keys` and returns the changes, in the order `view::diff` gives them
    /// (by kind, upserts before removes), with the backends they add and remove.
    pub fn update(
        &mut self,
        index: &ViewIndex,
        keys: &BTreeSet<Key>,
    ) -> (Vec<Change>, BackendChange) {
        self.index = self.index.max(index.index);
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        let mut backends = BackendChange::default();
        // Keys sort by kind; a kind's removes go out after its upserts.
        let mut kind = None;
        for key in keys {
            let k = std::mem::discriminant(key);
            if kind != Some(k) {
                upserts.append(&mut removes);
                kind = Some(k);
            }
            let part = index.part(&self.node_id, key);
            self.set(key, part, &mut upserts, &mut removes, &mut backends);
        }
        upserts.append(&mut removes);
        // A backend that moved from one endpoint to another did neither.
        let both: Vec<String> = backends
            .added
            .intersection(&backends.removed)
            .cloned()
            .collect();
        for t in both {
            backends.added.remove(&t);
            backends.removed.remove(&t);
        }
        (upserts, backends)
    }

    fn set(
        &mut self,
        key: &Key,
        part: Option<Part>,
        upserts: &mut Vec<Change>,
        removes: &mut Vec<Change>,
        backends: &mut BackendChange,
    ) {
        fn put<T: PartialEq>(
            map: &mut BTreeMap<String, Arc<T>>,
            id: &str,
            new: Option<Arc<T>>,
            upsert: impl FnOnce(&T) -> Change,
            remove: Change,
            upserts: &mut Vec<Change>,
            removes: &mut Vec<Change>,
        ) -> Option<Arc<T>> {
            match new {
                Some(n) => {
                    let same = map.get(id).is_some_and(|o| Arc::ptr_eq(o, &n) || **o == *n);
                    if same {
                        return None;
                    }
                    upserts.push(upsert(&n));
                    map.insert(id.to_string(), n)
                }
                None => {
                    let old = map.remove(id)?;
                    removes.push(remove);
                    Some(old)
                }
            }
        }
        match (key, part) {
            (Key::Node, part) => {
                let new = match part {
                    Some(Part::Node(n)) => Some(n),
                    _ => None,
                };
                if self.node.as_deref() != new.as_deref() {
                    // A node that is gone ends the session; there is no change for it.
                    if let Some(n) = &new {
                        upserts.push(Change::Node(Box::new((**n).clone())));
                    }
                    self.node = new;
                }
            }
            (Key::Task(id), part) => {
                let new = match part {
                    Some(Part::Task(t)) => Some(t),
                    _ => None,
                };
                put(
                    &mut self.tasks,
                    id,
                    new,
                    |t| Change::TaskUpsert(Box::new(t.clone())),
                    Change::TaskRemove(id.clone()),
                    upserts,
                    removes,
                );
            }
            (Key::Network(id), part) => {
                let new = match part {
                    Some(Part::Network(n, p)) => Some((n, p)),
                    _ => None,
                };
                match new {
                    Some((n, p)) => {
                        let view = network_view(&self.node_id, &n, &p);
                        let same = self
                            .networks
                            .get(id)
                            .is_some_and(|(on, op)| network_view(&self.node_id, on, op) == view);
                        if !same {
                            upserts.push(Change::NetworkUpsert(Box::new(view)));
                        }
                        self.networks.insert(id.clone(), (n, p));
                    }
                    None => {
                        if self.networks.remove(id).is_some() {
                            removes.push(Change::NetworkRemove(id.clone()));
                        }
                    }
                }
            }
            (Key::Endpoint(id), part) => {
                let new = match part {
                    Some(Part::Endpoint(e)) => Some(e),
                    _ => None,
                };
                let old = self.endpoints.get(id).cloned();
                put(
                    &mut self.endpoints,
                    id,
                    new,
                    |e| Change::EndpointUpsert(Box::new(e.clone())),
                    Change::EndpointRemove(id.clone()),
                    upserts,
                    removes,
                );
                let now = self.endpoints.get(id).cloned();
                if old != now {
                    self.count_backends(old.as_deref(), now.as_deref(), backends);
                }
            }
            (Key::Service(id), part) => {
                let new = match part {
                    Some(Part::Service(s)) => Some(s),
                    _ => None,
                };
                put(
                    &mut self.services,
                    id,
                    new,
                    |s| Change::ServiceUpsert(s.clone()),
                    Change::ServiceRemove(id.clone()),
                    upserts,
                    removes,
                );
            }
            (Key::Secret(id), part) => {
                let new = match part {
                    Some(Part::Secret(s)) => Some(s),
                    _ => None,
                };
                put(
                    &mut self.secrets,
                    id,
                    new,
                    |s| Change::SecretUpsert(Box::new(s.clone())),
                    Change::SecretRemove(id.clone()),
                    upserts,
                    removes,
                );
            }
            (Key::Config(id), part) => {
                let new = match part {
                    Some(Part::Config(c)) => Some(c),
                    _ => None,
                };
                put(
                    &mut self.configs,
                    id,
                    new,
                    |c| Change::ConfigUpsert(Box::new(c.clone())),
                    Change::ConfigRemove(id.clone()),
                    upserts,
                    removes,
                );
            }
            (Key::Managers, Some(Part::Managers(m))) => {
                if *self.managers != *m {
                    upserts.push(Change::Managers((*m).clone()));
                    self.managers = m;
                }
            }
            (
                Key::Cluster,
                Some(Part::Cluster {
                    heartbeat_period_ns,
                    data_path_port,
                }),
            ) => {
                if self.heartbeat_period_ns != heartbeat_period_ns {
                    upserts.push(Change::HeartbeatPeriod(heartbeat_period_ns));
                }
                // The delta has no change for the VXLAN port; a node learns it from the
                // snapshot, as before (it is fixed at `swarm init`).
                self.heartbeat_period_ns = heartbeat_period_ns;
                self.data_path_port = data_path_port;
            }
            (Key::Managers | Key::Cluster, _) => {}
        }
    }

    fn count_backends(
        &mut self,
        old: Option<&ServiceEndpoint>,
        new: Option<&ServiceEndpoint>,
        change: &mut BackendChange,
    ) {
        let ids = |e: Option<&ServiceEndpoint>| -> BTreeSet<String> {
            e.into_iter()
                .flat_map(|e| e.backends.iter().map(|b| b.task_id.clone()))
                .collect()
        };
        let (old, new) = (ids(old), ids(new));
        for t in old.difference(&new) {
            if let Some(n) = self.backends.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    self.backends.remove(t);
                    change.removed.insert(t.clone());
                }
            }
        }
        for t in new.difference(&old) {
            let n = self.backends.entry(t.clone()).or_default();
            *n += 1;
            if *n == 1 {
                change.added.insert(t.clone());
            }
        }
    }

    /// The view as the agent gets it.
    pub fn to_node_view(&self) -> NodeView {
        fn list<T: Clone>(m: &BTreeMap<String, Arc<T>>) -> Vec<T> {
            m.values().map(|v| (**v).clone()).collect()
        }
        NodeView {
            node: self.node.as_deref().cloned(),
            tasks: list(&self.tasks),
            networks: self
                .networks
                .values()
                .map(|(n, p)| network_view(&self.node_id, n, p))
                .collect(),
            endpoints: list(&self.endpoints),
            managers: (*self.managers).clone(),
            heartbeat_period_ns: self.heartbeat_period_ns,
            data_path_port: self.data_path_port,
            services: list(&self.services),
            secrets: list(&self.secrets),
            configs: list(&self.configs),
        }
    }
}

/// A network as one node sees it: every peer but itself.
fn network_view(node_id: &str, net: &Network, peers: &[NetworkPeer]) -> NetworkView {
    NetworkView {
        network: net.clone(),
        peers: peers
            .iter()
            .filter(|p| p.node_id != node_id)
            .cloned()
            .collect(),
    }
}
