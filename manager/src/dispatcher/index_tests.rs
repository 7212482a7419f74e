//! The incremental views against the reference: random command sequences go through
//! `apply_entry`, the touched objects through the index, and after every step each node's
//! view, kept up only by the parts the index named, must equal `node_view` computed from
//! scratch; the delta a session would send must turn the agent's previous view into it.

use super::index::{Copied, ViewIndex};
use super::session_view::SessionView;
use super::view::node_view;
use crate::ca::DataKey;
use crate::store::tests::{cluster, net_spec, service_spec};
use crate::store::{ClusterState, Command, TaskOp};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use shoal_api::dispatch::NodeView;
use shoal_api::objects::*;
use shoal_api::secrets::{ConfigReference, ConfigSpec, FileTarget, SecretReference, SecretSpec};
use std::collections::{BTreeMap, BTreeSet};

const NOW: &str = "2026-11-25T12:00:00Z";

struct Harness {
    state: ClusterState,
    key: DataKey,
    index: ViewIndex,
    /// Each node's session view, as the dispatcher keeps it.
    views: BTreeMap<String, SessionView>,
    /// What each agent holds: the first snapshot with every delta since applied.
    agents: BTreeMap<String, NodeView>,
    raft_index: u64,
    next_id: u64,
    rng: StdRng,
    /// What new nodes are made from.
    template: Node,
}

/// Lists sorted by id: an agent appends upserted items, the view keeps id order.
fn normalized(mut v: NodeView) -> NodeView {
    v.tasks.sort_by(|a, b| a.id.cmp(&b.id));
    v.networks.sort_by(|a, b| a.network.id.cmp(&b.network.id));
    v.endpoints.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    v.services.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    v.secrets.sort_by(|a, b| a.id.cmp(&b.id));
    v.configs.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut state = cluster((30000, 30100));
        let key = DataKey::generate();
        let index = ViewIndex::build(&state, 1, Some(key.clone()));
        let state_node = state.nodes["n1"].clone();
        state.nodes.get_mut("n1").unwrap().status.addr = "198.18.0.1".into();
        let mut h = Harness {
            state,
            key,
            index,
            views: BTreeMap::new(),
            agents: BTreeMap::new(),
            raft_index: 10,
            next_id: 0,
            rng: StdRng::seed_from_u64(seed),
            template: Node::clone(&state_node),
        };
        // The hand edit above went around apply: the index learns it as a change too.
        h.sync();
        h
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn apply(&mut self, command: Command) {
        self.raft_index += 1;
        let (_, touched) = self.state.apply_entry(self.raft_index, command);
        let copied = Copied::touched(&self.state, self.raft_index, &touched);
        let dirty = self.index.apply(copied);
        self.deliver(dirty);
    }

    /// Takes what was written to the state outside apply as touched.
    fn sync(&mut self) {
        let (_, touched) = self.state.apply_entry(
            0,
            Command::Tasks {
                ops: vec![],
                now: NOW.into(),
            },
        );
        let copied = Copied::touched(&self.state, self.raft_index, &touched);
        let dirty = self.index.apply(copied);
        self.deliver(dirty);
    }

    fn deliver(&mut self, dirty: super::index::Dirty) {
        let nodes: BTreeSet<String> = self
            .state
            .nodes
            .keys()
            .chain(self.views.keys())
            .cloned()
            .collect();
        for node in nodes {
            let Some(view) = self.views.get_mut(&node) else {
                let view = SessionView::full(&self.index, &node);
                self.agents.insert(node.clone(), view.to_node_view());
                self.views.insert(node.clone(), view);
                continue;
            };
            if let Some(keys) = dirty.get(&node) {
                let before: BTreeSet<String> = view.backends().cloned().collect();
                let (changes, backends) = view.update(&self.index, keys);
                let after: BTreeSet<String> = view.backends().cloned().collect();
                assert_eq!(
                    backends.added,
                    after.difference(&before).cloned().collect(),
                    "backends added to {node}"
                );
                assert_eq!(
                    backends.removed,
                    before.difference(&after).cloned().collect(),
                    "backends removed from {node}"
                );
                self.agents.get_mut(&node).unwrap().apply(changes);
            }
        }
    }

    fn check(&self, step: usize, what: &str) {
        for (node, view) in &self.views {
            let expected = node_view(&self.state, node, Some(&self.key));
            if expected.node.is_none() {
                assert!(
                    !view.node_exists(),
                    "step {step} ({what}): {node} was removed"
                );
                continue;
            }
            let got = view.to_node_view();
            assert_eq!(
                got, expected,
                "step {step} ({what}): incremental view of {node} differs from node_view"
            );
            let agent = self.agents[node].clone();
            assert_eq!(
                normalized(agent),
                normalized(expected.clone()),
                "step {step} ({what}): the deltas sent to {node} do not rebuild its view"
            );
            let backends: BTreeSet<&String> = expected
                .endpoints
                .iter()
                .flat_map(|e| e.backends.iter().map(|b| &b.task_id))
                .collect();
            assert_eq!(
                view.backends().collect::<BTreeSet<_>>(),
                backends,
                "step {step} ({what}): backends counted for {node}"
            );
        }
    }

    /// A fresh index of the state gives every node the same view as the kept one.
    fn check_rebuild(&self, step: usize) {
        let fresh = ViewIndex::build(&self.state, self.raft_index, Some(self.key.clone()));
        for node in self.state.nodes.keys() {
            assert_eq!(
                SessionView::full(&fresh, node).to_node_view(),
                node_view(&self.state, node, Some(&self.key)),
                "step {step}: rebuilt index, node {node}"
            );
        }
    }

    fn pick<'a>(&mut self, items: &'a [String]) -> Option<&'a String> {
        items.choose(&mut self.rng)
    }

    fn ids<T>(m: &BTreeMap<String, T>) -> Vec<String> {
        m.keys().cloned().collect()
    }

    fn random_spec(&mut self, name: &str) -> ServiceSpec {
        let nets: Vec<String> = self
            .state
            .networks
            .values()
            .filter(|n| !n.spec.ingress)
            .map(|n| n.id.clone())
            .collect();
        let mut chosen: Vec<&str> = nets
            .iter()
            .filter(|_| self.rng.random_bool(0.4))
            .map(|n| n.as_str())
            .collect();
        chosen.truncate(2);
        let ports: Vec<(u16, u16)> = if self.rng.random_bool(0.25) {
            vec![(0, 80)]
        } else {
            vec![]
        };
        let mut spec = service_spec(name, self.rng.random_range(0..3), &ports, &chosen);
        if !spec.endpoint_spec.ports.is_empty() && self.rng.random_bool(0.3) {
            spec.endpoint_spec.ports[0].publish_mode = PublishMode::Host;
            spec.endpoint_spec.ports[0].published_port = 0;
        }
        if spec.endpoint_spec.ports.is_empty() && self.rng.random_bool(0.2) {
            spec.endpoint_spec.mode = EndpointMode::Dnsrr;
        }
        if let Some(first) = chosen.first()
            && self.rng.random_bool(0.3)
        {
            spec.task_template.networks[0].aliases = vec![format!("{name}-alias")];
            let _ = first;
        }
        spec.labels
            .insert("rev".into(), self.rng.random_range(0..3).to_string());
        let files = |h: &mut Harness| {
            let secrets: Vec<String> = Self::ids(&h.state.secrets);
            let configs: Vec<String> = Self::ids(&h.state.configs);
            (h.pick(&secrets).cloned(), h.pick(&configs).cloned())
        };
        let (secret, config) = files(self);
        let target = |name: &str| {
            Some(FileTarget {
                name: name.into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            })
        };
        if let Some(id) = secret.filter(|_| self.rng.random_bool(0.5)) {
            spec.task_template.container_spec.secrets = vec![SecretReference {
                file: target("s"),
                secret_id: id.clone(),
                secret_name: self.state.secrets[&id].spec.name.clone(),
            }];
        }
        if let Some(id) = config.filter(|_| self.rng.random_bool(0.5)) {
            spec.task_template.container_spec.configs = vec![ConfigReference {
                file: target("/c"),
                config_id: id.clone(),
                config_name: self.state.configs[&id].spec.name.clone(),
            }];
        }
        spec
    }

    fn new_task(&mut self) -> Option<Command> {
        let services = Self::ids(&self.state.services);
        let nodes = Self::ids(&self.state.nodes);
        let service_id = self.pick(&services)?.clone();
        let service = self.state.services[&service_id].clone();
        let node = if self.rng.random_bool(0.8) {
            self.pick(&nodes)?.clone()
        } else {
            String::new()
        };
        let id = self.id("t");
        let task = Task {
            id,
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            service_id: service.id.clone(),
            slot: self.rng.random_range(0..4),
            node_id: node,
            spec: service.spec.task_template.clone(),
            spec_version: service.spec_version,
            status: TaskStatus::default(),
            desired_state: TaskState::Running,
            networks_attachments: vec![],
            restart_count: 0,
        };
        Some(Command::Tasks {
            ops: vec![TaskOp::Create(Box::new(task))],
            now: NOW.into(),
        })
    }

    fn task_op(&mut self) -> Option<Command> {
        let tasks = Self::ids(&self.state.tasks);
        let id = self.pick(&tasks)?.clone();
        let nodes = Self::ids(&self.state.nodes);
        let op = match self.rng.random_range(0..10) {
            0..=4 => {
                let state = *[
                    TaskState::Assigned,
                    TaskState::Preparing,
                    TaskState::Starting,
                    TaskState::Running,
                    TaskState::Running,
                    TaskState::Complete,
                    TaskState::Failed,
                ]
                .choose(&mut self.rng)?;
                TaskOp::Status {
                    id,
                    status: TaskStatus {
                        timestamp: NOW.into(),
                        state,
                        ..Default::default()
                    },
                }
            }
            5 | 6 => TaskOp::Assign {
                id,
                node_id: self.pick(&nodes)?.clone(),
            },
            7 | 8 => TaskOp::SetDesired {
                id,
                state: *[TaskState::Shutdown, TaskState::Complete].choose(&mut self.rng)?,
            },
            _ => TaskOp::Delete { id },
        };
        Some(Command::Tasks {
            ops: vec![op],
            now: NOW.into(),
        })
    }

    fn random_command(&mut self) -> Option<(Command, &'static str)> {
        let nodes = Self::ids(&self.state.nodes);
        let services = Self::ids(&self.state.services);
        let networks = Self::ids(&self.state.networks);
        let addr = format!("198.18.0.{}", self.rng.random_range(1..6));
        Some(match self.rng.random_range(0..100) {
            0..=5 => {
                let mut n = self.template.clone();
                n.id = self.id("n");
                n.spec.role = NodeRole::Worker;
                n.manager_status = None;
                n.ingress_addr = String::new();
                n.status.addr = if self.rng.random_bool(0.8) {
                    addr
                } else {
                    String::new()
                };
                (Command::AddNode(Box::new(n)), "node joins")
            }
            6..=10 => {
                let id = self.pick(&nodes)?.clone();
                let state = *[NodeState::Ready, NodeState::Down].choose(&mut self.rng)?;
                (
                    Command::NodeStatus {
                        id,
                        status: NodeStatus {
                            state,
                            message: String::new(),
                            addr,
                        },
                        description: None,
                        now: NOW.into(),
                    },
                    "node address or state",
                )
            }
            11 | 12 => {
                let id = self.pick(&nodes)?.clone();
                (Command::RemoveNode { id, force: true }, "node leaves")
            }
            13 | 14 => {
                let id = self.pick(&nodes)?.clone();
                let mut spec = self.state.nodes[&id].spec.clone();
                spec.role = if spec.role == NodeRole::Worker {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                };
                spec.labels
                    .insert(crate::store::GRPC_ADDR_LABEL.into(), format!("{addr}:2377"));
                (
                    Command::UpdateNodeSpec {
                        id,
                        spec,
                        now: NOW.into(),
                        expected: None,
                    },
                    "promote or demote",
                )
            }
            15..=19 => {
                let id = self.id("net");
                (
                    Command::CreateNetwork {
                        spec: net_spec(&id, false, None),
                        id,
                        now: NOW.into(),
                    },
                    "network created",
                )
            }
            20..=22 => {
                let id = self.pick(&networks)?.clone();
                (Command::RemoveNetwork { id }, "network removed")
            }
            23..=30 => {
                let id = self.id("svc");
                let spec = self.random_spec(&id);
                (
                    Command::CreateService {
                        id,
                        spec,
                        now: NOW.into(),
                    },
                    "service created",
                )
            }
            31..=37 => {
                let id = self.pick(&services)?.clone();
                let current = self.state.services[&id].clone();
                let mut spec = self.random_spec(&current.spec.name);
                if self.rng.random_bool(0.2) {
                    spec.name = self.id("renamed");
                }
                (
                    Command::UpdateService {
                        id,
                        version: current.version.index,
                        spec,
                        now: NOW.into(),
                    },
                    "service updated",
                )
            }
            38..=40 => {
                let id = self.pick(&services)?.clone();
                (
                    Command::RemoveService {
                        id,
                        now: NOW.into(),
                    },
                    "service removed",
                )
            }
            41..=42 => {
                let service_id = self.pick(&services)?.clone();
                let sealed = self.key.seal_text(&service_id, "dXNlcjpwYXNz");
                (
                    Command::SetRegistryAuth { service_id, sealed },
                    "registry credentials",
                )
            }
            43 | 44 => {
                let id = self.id("secret");
                let sealed = self.key.seal_b64(&id, b"hush");
                (
                    Command::CreateSecret {
                        spec: SecretSpec {
                            name: id.clone(),
                            ..Default::default()
                        },
                        id,
                        sealed,
                        now: NOW.into(),
                    },
                    "secret created",
                )
            }
            45 | 46 => {
                let id = self.id("config");
                (
                    Command::CreateConfig {
                        spec: ConfigSpec {
                            name: id.clone(),
                            data: b"x=1\n".to_vec(),
                            ..Default::default()
                        },
                        id,
                        now: NOW.into(),
                    },
                    "config created",
                )
            }
            47 => {
                let secrets = Self::ids(&self.state.secrets);
                let id = self.pick(&secrets)?.clone();
                (Command::RemoveSecret { id }, "secret removed")
            }
            48 => {
                let mut spec = self.state.cluster.as_ref()?.cluster.spec.clone();
                spec.dispatcher_heartbeat_period = self.rng.random_range(1..4) * 1_000_000_000;
                (
                    Command::UpdateClusterSpec {
                        spec,
                        now: NOW.into(),
                        expected: None,
                    },
                    "heartbeat period",
                )
            }
            49..=69 => (self.new_task()?, "task created"),
            _ => (self.task_op()?, "task changed"),
        })
    }
}

fn run(seed: u64, steps: usize) {
    let mut h = Harness::new(seed);
    h.check(0, "start");
    for step in 1..=steps {
        let Some((command, what)) = h.random_command() else {
            continue;
        };
        h.apply(command);
        h.check(step, what);
        if step % 50 == 0 {
            h.check_rebuild(step);
        }
    }
    h.check_rebuild(steps);
}

#[test]
fn incremental_views_equal_node_view_after_every_random_step() {
    for seed in 0..12 {
        run(seed, 300);
    }
}

#[test]
fn a_change_of_one_task_looks_at_its_node_and_the_nodes_that_see_its_service() {
    let mut h = Harness::new(99);
    for n in ["n2", "n3", "n4"] {
        let mut node = h.state.nodes["n1"].clone();
        node.id = n.into();
        node.spec.role = NodeRole::Worker;
        node.manager_status = None;
        node.ingress_addr = String::new();
        h.apply(Command::AddNode(Box::new(node)));
    }
    for (id, name) in [("a", "net-a"), ("b", "net-b")] {
        h.apply(Command::CreateNetwork {
            id: id.into(),
            spec: net_spec(name, false, None),
            now: NOW.into(),
        });
    }
    for (svc, net) in [("web", "a"), ("db", "b")] {
        h.apply(Command::CreateService {
            id: svc.into(),
            spec: service_spec(svc, 1, &[], &[net]),
            now: NOW.into(),
        });
    }
    let place = |h: &mut Harness, id: &str, svc: &str, node: &str| {
        let service = h.state.services[svc].clone();
        let mut t = Task {
            id: id.into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            service_id: svc.into(),
            slot: 1,
            node_id: node.into(),
            spec: service.spec.task_template.clone(),
            spec_version: service.spec_version,
            status: TaskStatus::default(),
            desired_state: TaskState::Running,
            networks_attachments: vec![],
            restart_count: 0,
        };
        t.status.state = TaskState::New;
        h.apply(Command::Tasks {
            ops: vec![TaskOp::Create(Box::new(t))],
            now: NOW.into(),
        });
    };
    place(&mut h, "w1", "web", "n2");
    place(&mut h, "w2", "web", "n3");
    place(&mut h, "d1", "db", "n4");
    h.check(0, "set up");

    // w1 starts running: web's endpoint changes for the nodes on net a (n2, n3), not n4.
    h.raft_index += 1;
    let (_, touched) = h.state.apply_entry(
        h.raft_index,
        Command::Tasks {
            ops: vec![TaskOp::Status {
                id: "w1".into(),
                status: TaskStatus {
                    timestamp: NOW.into(),
                    state: TaskState::Running,
                    ..Default::default()
                },
            }],
            now: NOW.into(),
        },
    );
    assert_eq!(touched.tasks, BTreeSet::from(["w1".to_string()]));
    let dirty = h
        .index
        .apply(Copied::touched(&h.state, h.raft_index, &touched));
    let nodes: Vec<&String> = dirty.keys().collect();
    assert_eq!(nodes, ["n2", "n3"], "n1 and n4 see neither w1 nor web");
    assert_eq!(
        dirty["n3"],
        [super::index::Key::Endpoint("web".into())].into(),
        "n3 looks at web's endpoint only"
    );
    h.deliver(dirty);
    h.check(1, "w1 running");
}
