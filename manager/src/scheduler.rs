//! Placement of tasks on nodes, as swarmkit's scheduler does: filters (readiness, reserved
//! resources, executor, constraints, host ports, replicas per node) then spread (over the
//! values of each placement preference in turn, then fewest tasks of the same service, then
//! fewest tasks overall). Pure: it reads the state and returns task ops for the leader to
//! propose.

use crate::store::{ClusterState, TaskOp};
use shoal_api::objects::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint {0:?} must look like node.role==manager or node.labels.zone!=east")]
    Syntax(String),
    #[error(
        "constraint {0:?}: unknown attribute; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.executor or node.labels.KEY"
    )]
    Attribute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    attribute: Attribute,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Attribute {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    Executor,
    Label(String),
}

impl Attribute {
    fn parse(key: &str) -> Option<Attribute> {
        Some(match key {
            "node.id" => Attribute::Id,
            "node.hostname" => Attribute::Hostname,
            "node.role" => Attribute::Role,
            "node.platform.os" => Attribute::Os,
            "node.platform.arch" => Attribute::Arch,
            "node.executor" => Attribute::Executor,
            k => match k.strip_prefix("node.labels.") {
                Some(label) if !label.is_empty() => Attribute::Label(label.to_string()),
                _ => return None,
            },
        })
    }

    fn value(&self, node: &Node) -> Option<String> {
        match self {
            Attribute::Id => Some(node.id.clone()),
            Attribute::Hostname => Some(node.hostname().to_string()),
            Attribute::Role => Some(node.spec.role.to_string()),
            Attribute::Os => Some(node.description.platform.os.clone()),
            Attribute::Arch => Some(node.description.platform.architecture.clone()),
            Attribute::Executor => Some(node.description.executor.clone()),
            Attribute::Label(k) => node.spec.labels.get(k).cloned(),
        }
    }
}

/// What a placement preference spreads over (`node.labels.zone`, or any attribute the
/// constraints know); `None` for a descriptor the scheduler can't read.
pub fn spread_attribute(descriptor: &str) -> Option<impl Fn(&Node) -> String> {
    let attribute = Attribute::parse(descriptor.trim())?;
    // Nodes without the label form a group of their own, as in swarmkit.
    Some(move |node: &Node| attribute.value(node).unwrap_or_default())
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Self, ConstraintError> {
        let (key, equal, value) = if let Some((k, v)) = s.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = s.split_once("==") {
            (k, true, v)
        } else {
            return Err(ConstraintError::Syntax(s.to_string()));
        };
        let key = key.trim();
        let value = value.trim();
        if value.is_empty() {
            return Err(ConstraintError::Syntax(s.to_string()));
        }
        let attribute =
            Attribute::parse(key).ok_or_else(|| ConstraintError::Attribute(s.to_string()))?;
        Ok(Constraint {
            attribute,
            equal,
            value: value.to_string(),
        })
    }

    pub fn matches(&self, node: &Node) -> bool {
        let actual = self.attribute.value(node);
        // Docker compares case-insensitively for everything but labels' values.
        let same = actual.is_some_and(|a| match self.attribute {
            Attribute::Label(_) => a == self.value,
            _ => a.eq_ignore_ascii_case(&self.value),
        });
        same == self.equal
    }
}

/// Why a node can't take a task, for the task's pending message, in the order the checks
/// run (swarmkit's filter pipeline: a node counts against the first check it fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    NotReady,
    NotActive,
    Resources,
    NoDocker,
    Constraint,
    HostPort,
    MaxReplicas,
}

/// What is placed on one node: live tasks overall and per service, what non-terminal tasks
/// reserve (a task stopping still holds its share, as in swarmkit), host-mode ports in use.
#[derive(Debug, Default, Clone)]
struct NodeUsage<'a> {
    tasks: usize,
    per_service: BTreeMap<&'a str, usize>,
    reserved: BTreeMap<&'a str, (i64, i64)>,
    host_ports: Vec<(Protocol, u16, &'a str)>,
}

impl NodeUsage<'_> {
    /// CPUs and memory reserved on the node, leaving out `except`'s tasks.
    fn reserved_without(&self, except: Option<&str>) -> (i64, i64) {
        self.reserved
            .iter()
            .filter(|(s, _)| Some(**s) != except)
            .fold((0, 0), |(c, m), (_, (tc, tm))| (c + tc, m + tm))
    }
}

/// Per node, what its tasks use. Built once per pass from the state; the scheduler adds
/// the tasks it places so that the next ones see them.
#[derive(Debug, Default, Clone)]
pub struct Usage<'a> {
    nodes: BTreeMap<&'a str, NodeUsage<'a>>,
}

impl<'a> Usage<'a> {
    pub fn of(state: &'a ClusterState) -> Self {
        let mut usage = Usage::default();
        for t in state
            .tasks
            .values()
            .filter(|t| !t.node_id.is_empty() && !t.status.state.is_terminal())
        {
            let n = usage.nodes.entry(&t.node_id).or_default();
            let r = &t.spec.resources.reservations;
            let held = n.reserved.entry(&t.service_id).or_default();
            held.0 += r.nano_cpus;
            held.1 += r.memory_bytes;
            if is_live(t) {
                n.tasks += 1;
                *n.per_service.entry(&t.service_id).or_default() += 1;
                if let Some(s) = state.services.get(&t.service_id) {
                    for (proto, port) in ClusterState::host_ports(s) {
                        n.host_ports.push((proto, port, &s.id));
                    }
                }
            }
        }
        usage
    }

    fn place(&mut self, node_id: &'a str, service: &'a Service) {
        let n = self.nodes.entry(node_id).or_default();
        n.tasks += 1;
        *n.per_service.entry(&service.id).or_default() += 1;
        let r = &service.spec.task_template.resources.reservations;
        let held = n.reserved.entry(&service.id).or_default();
        held.0 += r.nano_cpus;
        held.1 += r.memory_bytes;
        for (proto, port) in ClusterState::host_ports(service) {
            n.host_ports.push((proto, port, &service.id));
        }
    }

    fn tasks_of(&self, node_id: &str, service_id: &str) -> usize {
        self.nodes
            .get(node_id)
            .and_then(|n| n.per_service.get(service_id))
            .copied()
            .unwrap_or(0)
    }

    fn tasks_on(&self, node_id: &str) -> usize {
        self.nodes.get(node_id).map_or(0, |n| n.tasks)
    }
}

/// Whether `node` may take one more task of `service` now.
pub fn check_node(usage: &Usage, node: &Node, service: &Service) -> Result<(), Reject> {
    check_node_with(usage, node, service, false)
}

/// Whether `node` may keep running the task of a global service it has: its own task does
/// not count against the host-mode ports or the reservations.
pub fn check_node_keeping_own(usage: &Usage, node: &Node, service: &Service) -> Result<(), Reject> {
    check_node_with(usage, node, service, true)
}

fn check_node_with(
    usage: &Usage,
    node: &Node,
    service: &Service,
    own_tasks_ok: bool,
) -> Result<(), Reject> {
    if node.status.state != NodeState::Ready {
        return Err(Reject::NotReady);
    }
    if node.spec.availability != Availability::Active {
        return Err(Reject::NotActive);
    }
    let empty = NodeUsage::default();
    let used = usage.nodes.get(node.id.as_str()).unwrap_or(&empty);
    let tt = &service.spec.task_template;
    let want = &tt.resources.reservations;
    if !want.is_empty() {
        let (cpus, memory) = used.reserved_without(own_tasks_ok.then_some(service.id.as_str()));
        let offer = &node.description.resources;
        if cpus + want.nano_cpus > offer.nano_cpus
            || memory + want.memory_bytes > offer.memory_bytes
        {
            return Err(Reject::Resources);
        }
    }
    // Container tasks need a node whose shoald runs them on a Docker engine.
    if tt.runtime == Runtime::Docker && node.description.executor != "docker" {
        return Err(Reject::NoDocker);
    }
    if !tt
        .placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .all(|c| c.matches(node))
    {
        return Err(Reject::Constraint);
    }
    let host_ports = ClusterState::host_ports(service);
    if used.host_ports.iter().any(|(proto, port, owner)| {
        host_ports.contains(&(*proto, *port)) && !(own_tasks_ok && *owner == service.id)
    }) {
        return Err(Reject::HostPort);
    }
    let max = tt.placement.max_replicas;
    if max > 0
        && !own_tasks_ok
        && used
            .per_service
            .get(service.id.as_str())
            .copied()
            .unwrap_or(0) as u64
            >= max
    {
        return Err(Reject::MaxReplicas);
    }
    Ok(())
}

/// A task that holds (or will hold) a place on its node.
pub fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running && !t.status.state.is_terminal()
}

fn nodes(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// Docker's pending reason: the failed checks, most nodes first, e.g. "no suitable node
/// (insufficient resources on 3 nodes; scheduling constraints not satisfied on 1 node)".
fn pending_reason(rejects: &BTreeMap<Reject, usize>, total: usize) -> String {
    if total == 0 {
        return "no suitable node (the swarm has no nodes)".into();
    }
    let mut counts: Vec<(usize, Reject)> = Vec::new();
    for (r, n) in rejects {
        // Not ready and paused or drained are one check in Docker.
        let r = if *r == Reject::NotActive {
            Reject::NotReady
        } else {
            *r
        };
        match counts.iter_mut().find(|(_, k)| *k == r) {
            Some((c, _)) => *c += n,
            None => counts.push((*n, r)),
        }
    }
    counts.sort_by_key(|(n, r)| (std::cmp::Reverse(*n), *r));
    let parts: Vec<String> = counts
        .iter()
        .map(|(n, r)| match r {
            Reject::NotReady | Reject::NotActive => {
                format!("{} not available for new tasks", nodes(*n))
            }
            Reject::Resources => format!("insufficient resources on {}", nodes(*n)),
            Reject::NoDocker => format!(
                "no Docker engine on {} (shoald --executor native)",
                nodes(*n)
            ),
            Reject::Constraint => {
                format!("scheduling constraints not satisfied on {}", nodes(*n))
            }
            Reject::HostPort => format!("host-mode port already in use on {}", nodes(*n)),
            Reject::MaxReplicas => "max replicas per node limit exceed".into(),
        })
        .collect();
    format!("no suitable node ({})", parts.join("; "))
}

/// The candidate a task of `service` goes to: the one in the emptiest group at each
/// placement preference in turn (swarmkit's decision tree: a group's count is the
/// service's tasks on its candidate nodes), then with the fewest tasks of the service,
/// then the fewest tasks overall; ties go to the lowest node id.
fn pick<'n>(usage: &Usage, service: &Service, candidates: &[&'n Node]) -> Option<&'n Node> {
    let spreads: Vec<_> = service
        .spec
        .task_template
        .placement
        .preferences
        .iter()
        .filter_map(|p| spread_attribute(&p.spread.spread_descriptor))
        .collect();
    let paths: Vec<Vec<String>> = candidates
        .iter()
        .map(|n| spreads.iter().map(|value| value(n)).collect())
        .collect();
    let mut groups: BTreeMap<&[String], usize> = BTreeMap::new();
    for (node, path) in candidates.iter().zip(&paths) {
        let here = usage.tasks_of(&node.id, &service.id);
        for level in 1..=path.len() {
            *groups.entry(&path[..level]).or_default() += here;
        }
    }
    candidates
        .iter()
        .zip(&paths)
        .min_by_key(|(node, path)| {
            let mut key: Vec<usize> = (1..=path.len()).map(|l| groups[&path[..l]]).collect();
            key.push(usage.tasks_of(&node.id, &service.id));
            key.push(usage.tasks_on(&node.id));
            key
        })
        .map(|(node, _)| *node)
}

/// Assigns every unassigned pending task it can. Tasks placed in this pass count towards the
/// checks and the spread of the next ones. A task no node can take stays pending with the
/// reason in its status' `Err`, which `service ps` shows.
pub fn schedule(state: &ClusterState) -> Vec<TaskOp> {
    let mut ops = Vec::new();
    let mut usage = Usage::of(state);
    let pending = state.tasks.values().filter(|t| {
        t.node_id.is_empty()
            && t.desired_state <= TaskState::Running
            && t.status.state == TaskState::Pending
    });
    for task in pending {
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        let mut rejects: BTreeMap<Reject, usize> = BTreeMap::new();
        let mut candidates = Vec::new();
        for node in state.nodes.values() {
            match check_node(&usage, node, service) {
                Err(r) => *rejects.entry(r).or_default() += 1,
                Ok(()) => candidates.push(node),
            }
        }
        match pick(&usage, service, &candidates) {
            Some(node) => {
                usage.place(&node.id, service);
                ops.push(TaskOp::Assign {
                    id: task.id.clone(),
                    node_id: node.id.clone(),
                });
            }
            None => {
                let reason = pending_reason(&rejects, state.nodes.len());
                if task.status.err != reason {
                    let mut status = task.status.clone();
                    status.message = "pending task scheduling".into();
                    status.err = reason;
                    ops.push(TaskOp::Status {
                        id: task.id.clone(),
                        status,
                    });
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests;
