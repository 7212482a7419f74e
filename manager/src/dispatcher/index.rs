//! The dispatcher's own copy of what views are made of, kept current from the change feed:
//! the objects views carry (each built once and shared by every view that holds it) and the
//! indexes that say which nodes care about a change (tasks by node and by service, the
//! networks in each node's view, the VXLAN peers of each network with reference counts,
//! services by network, services publishing through the routing mesh).
//!
//! [`ViewIndex::apply`] takes the touched objects as copied out of the state and returns,
//! per node, the parts of its view to look at again ([`Key`]); [`ViewIndex::part`] answers
//! what one part is now. Nothing here scans all tasks or all services: a change costs the
//! objects it touched, the service endpoints they belong to and the nodes that see them.
//! `view::node_view` stays the reference it must agree with (see `index_tests.rs`).

use super::view;
use crate::ca::DataKey;
use crate::store::{ClusterState, Touched};
use shoal_api::dispatch::{ManagerPeer, NetworkPeer, ServiceAnnotations, ServiceEndpoint};
use shoal_api::objects::*;
use shoal_api::secrets::{Config, Secret, SecretPayload};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One part of a node's view, as the deltas name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Node,
    Task(String),
    Network(String),
    Endpoint(String),
    Service(String),
    Secret(String),
    Config(String),
    Managers,
    Cluster,
}

/// What a part is now; shared, not copied, between the views that hold it.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Node(Arc<Node>),
    Task(Arc<Task>),
    /// The network with every peer on it; each view leaves its own node out.
    Network(Arc<Network>, Arc<Vec<NetworkPeer>>),
    Endpoint(Arc<ServiceEndpoint>),
    Service(Arc<ServiceAnnotations>),
    Secret(Arc<SecretPayload>),
    Config(Arc<Config>),
    Managers(Arc<Vec<ManagerPeer>>),
    Cluster {
        heartbeat_period_ns: u64,
        data_path_port: u16,
    },
}

/// The parts of each node's view to look at again after a change.
pub type Dirty = BTreeMap<String, BTreeSet<Key>>;

/// A service with its sealed registry credentials.
pub type ServiceCopy = (Service, Option<String>);

/// The touched objects as the state has them now (`None`: gone), copied under the state's
/// read lock so that everything else runs without it.
#[derive(Debug, Default)]
pub struct Copied {
    /// The raft index of the state they were copied from.
    pub index: u64,
    pub cluster: Option<(u64, u16)>,
    pub nodes: Vec<(String, Option<Node>)>,
    pub services: Vec<(String, Option<ServiceCopy>)>,
    pub tasks: Vec<(String, Option<Task>)>,
    pub networks: Vec<(String, Option<Network>)>,
    /// With the secret's sealed data.
    pub secrets: Vec<(String, Option<(Secret, String)>)>,
    pub configs: Vec<(String, Option<Config>)>,
}

impl Copied {
    /// What `touched` names, from `state` as of `index`. Costs the touched objects.
    pub fn touched(state: &ClusterState, index: u64, touched: &Touched) -> Copied {
        let services: BTreeSet<&String> = touched
            .services
            .iter()
            .chain(&touched.registry_auth)
            .collect();
        Copied {
            index,
            cluster: touched.cluster.then(|| view::cluster_settings(state)),
            nodes: copy(&touched.nodes, |id| state.nodes.get(id).cloned()),
            services: copy(services, |id| service_of(state, id)),
            tasks: copy(&touched.tasks, |id| state.tasks.get(id).cloned()),
            networks: copy(&touched.networks, |id| state.networks.get(id).cloned()),
            secrets: copy(&touched.secrets, |id| secret_of(state, id)),
            configs: copy(&touched.configs, |id| state.configs.get(id).cloned()),
        }
    }

    /// Everything: what a fresh index is built from. Costs the whole state, once.
    pub fn everything(state: &ClusterState, index: u64) -> Copied {
        Copied {
            index,
            cluster: Some(view::cluster_settings(state)),
            nodes: copy(state.nodes.keys(), |id| state.nodes.get(id).cloned()),
            services: copy(state.services.keys(), |id| service_of(state, id)),
            tasks: copy(state.tasks.keys(), |id| state.tasks.get(id).cloned()),
            networks: copy(state.networks.keys(), |id| state.networks.get(id).cloned()),
            secrets: copy(state.secrets.keys(), |id| secret_of(state, id)),
            configs: copy(state.configs.keys(), |id| state.configs.get(id).cloned()),
        }
    }
}

fn copy<'a, T>(
    ids: impl IntoIterator<Item = &'a String>,
    get: impl Fn(&str) -> Option<T>,
) -> Vec<(String, Option<T>)> {
    ids.into_iter().map(|id| (id.clone(), get(id))).collect()
}

fn service_of(state: &ClusterState, id: &str) -> Option<(Service, Option<String>)> {
    let s = state.services.get(id)?.clone();
    Some((s, state.registry_auth.get(id).cloned()))
}

fn secret_of(state: &ClusterState, id: &str) -> Option<(Secret, String)> {
    let s = state.secrets.get(id)?.clone();
    Some((s, state.secret_data.get(id)?.clone()))
}

/// Reference counts: a key is in the set while its count is above zero. `add` and `sub`
/// say whether the set itself changed.
#[derive(Debug, Default)]
struct Counts(BTreeMap<String, usize>);

impl Counts {
    fn add(&mut self, key: &str) -> bool {
        let n = self.0.entry(key.to_string()).or_default();
        *n += 1;
        *n == 1
    }

    fn sub(&mut self, key: &str) -> bool {
        let Some(n) = self.0.get_mut(key) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.0.remove(key);
            return true;
        }
        false
    }

    fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

/// The counted sets a task is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Counted {
    /// Its service, among those of the tasks in its node's view.
    Service,
    /// A network it brings into its node's view.
    ViewNetwork,
    /// A network it makes its node a VXLAN peer on.
    PeerNetwork,
    Secret,
    Config,
}

/// (node, set, key) for every counted set a task is in.
fn contribution(t: &Task) -> Vec<(&str, Counted, &str)> {
    let mut out = Vec::new();
    if t.node_id.is_empty() {
        return out;
    }
    let node = t.node_id.as_str();
    let nets = || t.networks_attachments.iter().map(|a| a.network_id.as_str());
    if view::in_node_view(t) {
        out.push((node, Counted::Service, t.service_id.as_str()));
    }
    if view::brings_networks(t) {
        out.extend(nets().map(|n| (node, Counted::ViewNetwork, n)));
    }
    if view::is_live(t) {
        out.extend(nets().map(|n| (node, Counted::PeerNetwork, n)));
        let (secrets, configs) = view::task_files(t);
        out.extend(secrets.into_iter().map(|s| (node, Counted::Secret, s)));
        out.extend(configs.into_iter().map(|c| (node, Counted::Config, c)));
    }
    out
}

#[derive(Default)]
pub struct ViewIndex {
    data_key: Option<DataKey>,
    /// Raft index of the state the index was last brought to.
    pub index: u64,
    heartbeat_period_ns: u64,
    data_path_port: u16,
    nodes: BTreeMap<String, Arc<Node>>,
    services: BTreeMap<String, Arc<Service>>,
    tasks: HashMap<String, Arc<Task>>,
    networks: BTreeMap<String, Arc<Network>>,
    ingress: Option<String>,
    secrets: BTreeMap<String, Arc<SecretPayload>>,
    configs: BTreeMap<String, Arc<Config>>,
    annotations: BTreeMap<String, Arc<ServiceAnnotations>>,
    endpoints: BTreeMap<String, Arc<ServiceEndpoint>>,
    peers: HashMap<String, Arc<Vec<NetworkPeer>>>,
    managers: BTreeMap<String, ManagerPeer>,
    manager_list: Arc<Vec<ManagerPeer>>,

    tasks_by_node: HashMap<String, BTreeSet<String>>,
    tasks_by_service: HashMap<String, BTreeSet<String>>,
    /// Per node, the networks its tasks bring into its view (ingress is in every view).
    view_networks: HashMap<String, Counts>,
    /// Per network, the nodes that have it in view.
    viewers: HashMap<String, BTreeSet<String>>,
    /// Per network, the nodes with live tasks on it: its VXLAN peers.
    members: HashMap<String, Counts>,
    /// Per node, the networks it is a peer on.
    member_of: HashMap<String, BTreeSet<String>>,
    /// Per node, the services of the tasks in its view.
    node_services: HashMap<String, Counts>,
    node_secrets: HashMap<String, Counts>,
    node_configs: HashMap<String, Counts>,
    /// Per network, the services whose endpoint is seen on it.
    services_by_network: HashMap<String, BTreeSet<String>>,
    /// Services that publish through the routing mesh: every node sees them.
    mesh_services: BTreeSet<String>,
}

/// Work found while applying one batch, done once the indexes are all current.
#[derive(Default)]
struct Pending {
    dirty: Dirty,
    endpoints: BTreeSet<String>,
    annotations: BTreeSet<String>,
    peers: BTreeSet<String>,
    /// Services whose networks may have changed, with the nodes that saw them when the
    /// batch began (before its tasks moved any node off their networks).
    moved_services: BTreeMap<String, BTreeSet<String>>,
    every_node: BTreeSet<Key>,
}

impl Pending {
    fn mark(&mut self, node: &str, key: Key) {
        if !node.is_empty() {
            self.dirty.entry(node.to_string()).or_default().insert(key);
        }
    }
}

impl ViewIndex {
    /// An index of `state` as it is now. Costs the whole state, once per leadership (or
    /// after falling behind the feed).
    pub fn build(state: &ClusterState, index: u64, data_key: Option<DataKey>) -> ViewIndex {
        let mut ix = ViewIndex {
            data_key,
            ..Default::default()
        };
        ix.apply(Copied::everything(state, index));
        ix
    }

    /// Brings the index to the state `copied` was taken from; returns the parts of each
    /// node's view that may have changed.
    pub fn apply(&mut self, copied: Copied) -> Dirty {
        let mut p = Pending::default();
        self.index = self.index.max(copied.index);
        if let Some((hb, port)) = copied.cluster
            && (hb, port) != (self.heartbeat_period_ns, self.data_path_port)
        {
            (self.heartbeat_period_ns, self.data_path_port) = (hb, port);
            p.every_node.insert(Key::Cluster);
        }
        for (id, net) in copied.networks {
            self.network_changed(&mut p, id, net);
        }
        for (id, node) in copied.nodes {
            self.node_changed(&mut p, id, node);
        }
        for (id, s) in copied.services {
            self.service_changed(&mut p, id, s);
        }
        for (id, task) in copied.tasks {
            self.task_changed(&mut p, id, task);
        }
        for (id, secret) in copied.secrets {
            let opened = secret.and_then(|(s, sealed)| {
                view::open_secret(&s, &sealed, self.data_key.as_ref()).map(Arc::new)
            });
            set(&mut self.secrets, &id, opened);
            for (node, refs) in &self.node_secrets {
                if refs.contains(&id) {
                    p.mark(node, Key::Secret(id.clone()));
                }
            }
        }
        for (id, config) in copied.configs {
            set(&mut self.configs, &id, config.map(Arc::new));
            for (node, refs) in &self.node_configs {
                if refs.contains(&id) {
                    p.mark(node, Key::Config(id.clone()));
                }
            }
        }
        self.finish(p)
    }

    fn network_changed(&mut self, p: &mut Pending, id: String, net: Option<Network>) {
        let was_ingress = self.ingress.as_deref() == Some(id.as_str());
        let is_ingress = net.as_ref().is_some_and(|n| n.spec.ingress);
        set(&mut self.networks, &id, net.map(Arc::new));
        if is_ingress {
            self.ingress = Some(id.clone());
        } else if was_ingress {
            self.ingress = None;
        }
        if was_ingress || is_ingress {
            // Every view has ingress, and with it the services seen there.
            p.every_node.insert(Key::Network(id.clone()));
            for s in self.services_by_network.get(&id).into_iter().flatten() {
                p.every_node.insert(Key::Endpoint(s.clone()));
            }
            p.peers.insert(id);
        } else {
            for node in self.viewers.get(&id).into_iter().flatten() {
                p.mark(node, Key::Network(id.clone()));
            }
        }
    }

    fn node_changed(&mut self, p: &mut Pending, id: String, node: Option<Node>) {
        let old = self.nodes.get(&id).cloned();
        let as_peer = |n: &Option<Arc<Node>>| {
            n.as_ref()
                .map(|n| (n.status.addr.clone(), n.ingress_addr.clone()))
        };
        let new = node.map(Arc::new);
        let peer_changed = as_peer(&old) != as_peer(&new);
        let manager = new.as_deref().and_then(manager_peer);
        set(&mut self.nodes, &id, new);
        p.mark(&id, Key::Node);
        if self.managers.get(&id) != manager.as_ref() {
            match manager {
                Some(m) => self.managers.insert(id.clone(), m),
                None => self.managers.remove(&id),
            };
            self.manager_list = Arc::new(self.managers.values().cloned().collect());
            p.every_node.insert(Key::Managers);
        }
        if peer_changed {
            p.peers
                .extend(self.member_of.get(&id).into_iter().flatten().cloned());
            p.peers.extend(self.ingress.clone());
        }
        if old.is_none() {
            // A new node sees ingress and the services published on the mesh. Its session
            // starts from a full view, so this only matters for a node re-added while
            // its session runs, which can't happen; marked anyway to keep views exact.
            if let Some(ingress) = self.ingress.clone() {
                p.mark(&id, Key::Network(ingress.clone()));
                for s in self.services_by_network.get(&ingress).into_iter().flatten() {
                    p.mark(&id, Key::Endpoint(s.clone()));
                }
            }
            for s in &self.mesh_services {
                p.mark(&id, Key::Endpoint(s.clone()));
            }
        }
    }

    fn service_changed(
        &mut self,
        p: &mut Pending,
        id: String,
        service: Option<(Service, Option<String>)>,
    ) {
        let old = self.services.get(&id).cloned();
        if !p.moved_services.contains_key(&id) {
            let viewers = self.service_viewers(old.as_deref(), p);
            p.moved_services.insert(id.clone(), viewers);
        }
        if let Some(o) = &old {
            for net in view::service_networks(o) {
                remove_from(&mut self.services_by_network, net, &id);
            }
            self.mesh_services.remove(&id);
        }
        let annotation = service.as_ref().map(|(s, auth)| {
            Arc::new(view::service_annotations(
                s,
                auth.as_deref(),
                self.data_key.as_ref(),
            ))
        });
        let new = service.map(|(s, _)| Arc::new(s));
        if let Some(s) = &new {
            for net in view::service_networks(s) {
                self.services_by_network
                    .entry(net.to_string())
                    .or_default()
                    .insert(id.clone());
            }
            if ClusterState::uses_ingress(&s.spec) {
                self.mesh_services.insert(id.clone());
            }
        }
        set(&mut self.services, &id, new);
        if self.annotations.get(&id) != annotation.as_ref() {
            set(&mut self.annotations, &id, annotation);
            p.annotations.insert(id.clone());
        }
        p.endpoints.insert(id);
    }

    fn task_changed(&mut self, p: &mut Pending, id: String, task: Option<Task>) {
        let new = task.map(Arc::new);
        let old = match &new {
            Some(t) => self.tasks.insert(id.clone(), t.clone()),
            None => self.tasks.remove(&id),
        };
        for t in old.iter().chain(&new) {
            p.mark(&t.node_id, Key::Task(id.clone()));
            if view::is_backend(t) {
                p.endpoints.insert(t.service_id.clone());
            }
        }
        if let Some(t) = &old {
            remove_from(&mut self.tasks_by_node, &t.node_id, &id);
            remove_from(&mut self.tasks_by_service, &t.service_id, &id);
        }
        if let Some(t) = &new {
            if !t.node_id.is_empty() {
                self.tasks_by_node
                    .entry(t.node_id.clone())
                    .or_default()
                    .insert(id.clone());
            }
            self.tasks_by_service
                .entry(t.service_id.clone())
                .or_default()
                .insert(id.clone());
        }
        self.recount(p, old.as_deref(), new.as_deref());
    }

    /// Moves a task's counts from what it was to what it is. Only the difference is
    /// applied: a status report of a task that stays on its networks must not make its
    /// node look again at every service there.
    fn recount(&mut self, p: &mut Pending, old: Option<&Task>, new: Option<&Task>) {
        let mut net: BTreeMap<(&str, Counted, &str), i32> = BTreeMap::new();
        for k in old.map(contribution).unwrap_or_default() {
            *net.entry(k).or_default() -= 1;
        }
        for k in new.map(contribution).unwrap_or_default() {
            *net.entry(k).or_default() += 1;
        }
        for ((node, set, key), n) in net {
            if n != 0 {
                self.step(p, node, set, key, n > 0);
            }
        }
    }

    fn step(&mut self, p: &mut Pending, node: &str, set: Counted, key: &str, add: bool) {
        let counts = match set {
            Counted::Service => &mut self.node_services,
            Counted::ViewNetwork => &mut self.view_networks,
            Counted::PeerNetwork => &mut self.members,
            Counted::Secret => &mut self.node_secrets,
            Counted::Config => &mut self.node_configs,
        };
        // Peers are counted per network, everything else per node.
        let (outer, inner) = if set == Counted::PeerNetwork {
            (key, node)
        } else {
            (node, key)
        };
        let counts = counts.entry(outer.to_string()).or_default();
        let changed = if add {
            counts.add(inner)
        } else {
            counts.sub(inner)
        };
        if !changed {
            return;
        }
        let (node_s, key_s) = (node.to_string(), key.to_string());
        match set {
            Counted::Service => p.mark(node, Key::Service(key_s)),
            Counted::Secret => p.mark(node, Key::Secret(key_s)),
            Counted::Config => p.mark(node, Key::Config(key_s)),
            Counted::ViewNetwork => {
                let viewers = self.viewers.entry(key_s.clone()).or_default();
                if add {
                    viewers.insert(node_s);
                } else {
                    viewers.remove(node);
                }
                p.mark(node, Key::Network(key_s));
                for s in self.services_by_network.get(key).into_iter().flatten() {
                    p.mark(node, Key::Endpoint(s.clone()));
                }
            }
            Counted::PeerNetwork => {
                let of = self.member_of.entry(node_s).or_default();
                if add {
                    of.insert(key_s.clone());
                } else {
                    of.remove(key);
                }
                p.peers.insert(key_s);
            }
        }
    }

    /// Rebuilds the shared objects the batch changed, each once, and marks the nodes that
    /// see them.
    fn finish(&mut self, mut p: Pending) -> Dirty {
        for (id, mut nodes) in std::mem::take(&mut p.moved_services) {
            // Nodes that saw it by its old networks or see it by its new ones.
            nodes.extend(self.service_viewers(self.services.get(&id).cloned().as_deref(), &mut p));
            for n in nodes {
                p.mark(&n, Key::Endpoint(id.clone()));
            }
        }
        for id in std::mem::take(&mut p.endpoints) {
            let endpoint = self.services.get(&id).map(|s| {
                let tasks = self
                    .tasks_by_service
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| self.tasks.get(t))
                    .map(|t| &**t);
                Arc::new(view::service_endpoint(s, tasks))
            });
            if self.endpoints.get(&id) == endpoint.as_ref() {
                continue;
            }
            set(&mut self.endpoints, &id, endpoint);
            let service = self.services.get(&id).cloned();
            for n in self.service_viewers(service.as_deref(), &mut p) {
                p.mark(&n, Key::Endpoint(id.clone()));
            }
        }
        for id in std::mem::take(&mut p.annotations) {
            let nodes: BTreeSet<&String> = self
                .tasks_by_service
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|t| self.tasks.get(t))
                .filter(|t| view::in_node_view(t))
                .map(|t| &t.node_id)
                .collect();
            for n in nodes {
                p.dirty
                    .entry(n.clone())
                    .or_default()
                    .insert(Key::Service(id.clone()));
            }
        }
        for net in std::mem::take(&mut p.peers) {
            let peers = Arc::new(self.peers_of(&net));
            if self.peers.get(&net) == Some(&peers) {
                continue;
            }
            self.peers.insert(net.clone(), peers);
            if self.ingress.as_deref() == Some(net.as_str()) {
                p.every_node.insert(Key::Network(net));
            } else {
                for n in self.viewers.get(&net).into_iter().flatten() {
                    p.dirty
                        .entry(n.clone())
                        .or_default()
                        .insert(Key::Network(net.clone()));
                }
            }
        }
        if !p.every_node.is_empty() {
            for n in self.nodes.keys() {
                p.dirty
                    .entry(n.clone())
                    .or_default()
                    .extend(p.every_node.iter().cloned());
            }
        }
        p.dirty
    }

    /// The nodes whose view holds a service's endpoint; every node when it publishes on
    /// the mesh or has a VIP on ingress. Marking every node is left to `p`.
    fn service_viewers(&self, s: Option<&Service>, p: &mut Pending) -> BTreeSet<String> {
        let Some(s) = s else { return BTreeSet::new() };
        let ingress = self.ingress.as_deref();
        if ClusterState::uses_ingress(&s.spec)
            || view::service_networks(s).any(|n| Some(n) == ingress)
        {
            p.every_node.insert(Key::Endpoint(s.id.clone()));
            return BTreeSet::new();
        }
        view::service_networks(s)
            .flat_map(|n| self.viewers.get(n).into_iter().flatten())
            .cloned()
            .collect()
    }

    fn peers_of(&self, net: &str) -> Vec<NetworkPeer> {
        let is_ingress = self.ingress.as_deref() == Some(net);
        let mut peers: Vec<NetworkPeer> = if is_ingress {
            self.nodes
                .values()
                .filter_map(|n| view::network_peer(n, true))
                .collect()
        } else {
            self.members
                .get(net)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter_map(|id| self.nodes.get(id))
                .filter_map(|n| view::network_peer(n, false))
                .collect()
        };
        peers.sort();
        peers
    }

    fn sees_network(&self, node: &str, net: &str) -> bool {
        self.ingress.as_deref() == Some(net)
            || self
                .view_networks
                .get(node)
                .is_some_and(|c| c.contains(net))
    }

    /// What `key` of `node`'s view is now; `None` when the view does not hold it.
    pub fn part(&self, node: &str, key: &Key) -> Option<Part> {
        match key {
            Key::Node => self.nodes.get(node).cloned().map(Part::Node),
            Key::Task(id) => self
                .tasks
                .get(id)
                .filter(|t| t.node_id == node && view::in_node_view(t))
                .cloned()
                .map(Part::Task),
            Key::Network(id) => {
                let net = self
                    .networks
                    .get(id)
                    .filter(|_| self.sees_network(node, id))?;
                let peers = self.peers.get(id).cloned().unwrap_or_default();
                Some(Part::Network(net.clone(), peers))
            }
            Key::Endpoint(id) => {
                let s = self.services.get(id)?;
                let seen = ClusterState::uses_ingress(&s.spec)
                    || view::service_networks(s).any(|n| self.sees_network(node, n));
                if !seen {
                    return None;
                }
                self.endpoints.get(id).cloned().map(Part::Endpoint)
            }
            Key::Service(id) => self
                .node_services
                .get(node)
                .filter(|c| c.contains(id))
                .and(self.annotations.get(id))
                .cloned()
                .map(Part::Service),
            Key::Secret(id) => self
                .node_secrets
                .get(node)
                .filter(|c| c.contains(id))
                .and(self.secrets.get(id))
                .cloned()
                .map(Part::Secret),
            Key::Config(id) => self
                .node_configs
                .get(node)
                .filter(|c| c.contains(id))
                .and(self.configs.get(id))
                .cloned()
                .map(Part::Config),
            Key::Managers => Some(Part::Managers(self.manager_list.clone())),
            Key::Cluster => Some(Part::Cluster {
                heartbeat_period_ns: self.heartbeat_period_ns,
                data_path_port: self.data_path_port,
            }),
        }
    }

    /// Every part `node`'s view may hold: what its first snapshot is made of. Costs that
    /// view, not the cluster.
    pub fn keys(&self, node: &str) -> BTreeSet<Key> {
        let mut keys: BTreeSet<Key> = [Key::Node, Key::Managers, Key::Cluster].into();
        let ids = |m: &HashMap<String, BTreeSet<String>>| {
            m.get(node)
                .cloned()
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        };
        keys.extend(ids(&self.tasks_by_node).into_iter().map(Key::Task));
        let nets: BTreeSet<String> = self
            .view_networks
            .get(node)
            .into_iter()
            .flat_map(|c| c.keys().cloned())
            .chain(self.ingress.clone())
            .collect();
        for net in &nets {
            keys.insert(Key::Network(net.clone()));
            for s in self.services_by_network.get(net).into_iter().flatten() {
                keys.insert(Key::Endpoint(s.clone()));
            }
        }
        keys.extend(self.mesh_services.iter().cloned().map(Key::Endpoint));
        let counted = |m: &HashMap<String, Counts>| {
            m.get(node)
                .into_iter()
                .flat_map(|c| c.keys().cloned())
                .collect::<Vec<_>>()
        };
        keys.extend(counted(&self.node_services).into_iter().map(Key::Service));
        keys.extend(counted(&self.node_secrets).into_iter().map(Key::Secret));
        keys.extend(counted(&self.node_configs).into_iter().map(Key::Config));
        keys
    }
}

fn manager_peer(n: &Node) -> Option<ManagerPeer> {
    // As `ClusterState::manager_peers` has them.
    if n.spec.role != NodeRole::Manager {
        return None;
    }
    Some(ManagerPeer {
        node_id: n.id.clone(),
        raft_id: n.raft_id,
        addr: n.manager_status.as_ref()?.addr.clone(),
    })
}

fn set<T>(map: &mut BTreeMap<String, T>, id: &str, value: Option<T>) {
    match value {
        Some(v) => {
            map.insert(id.to_string(), v);
        }
        None => {
            map.remove(id);
        }
    }
}

fn remove_from(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}
