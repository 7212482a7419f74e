//! Placement of tasks on nodes: filters (readiness, availability, constraints, host ports)
//! then spread (fewest tasks of the same service, then fewest tasks overall). Pure: it reads
//! the state and returns task ops for the leader to propose.

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
        let attribute = match key {
            "node.id" => Attribute::Id,
            "node.hostname" => Attribute::Hostname,
            "node.role" => Attribute::Role,
            "node.platform.os" => Attribute::Os,
            "node.platform.arch" => Attribute::Arch,
            "node.executor" => Attribute::Executor,
            k => match k.strip_prefix("node.labels.") {
                Some(label) if !label.is_empty() => Attribute::Label(label.to_string()),
                _ => return Err(ConstraintError::Attribute(s.to_string())),
            },
        };
        Ok(Constraint {
            attribute,
            equal,
            value: value.to_string(),
        })
    }

    pub fn matches(&self, node: &Node) -> bool {
        let actual = match &self.attribute {
            Attribute::Id => Some(node.id.clone()),
            Attribute::Hostname => Some(node.hostname().to_string()),
            Attribute::Role => Some(node.spec.role.to_string()),
            Attribute::Os => Some(node.description.platform.os.clone()),
            Attribute::Arch => Some(node.description.platform.architecture.clone()),
            Attribute::Executor => Some(node.description.executor.clone()),
            Attribute::Label(k) => node.spec.labels.get(k).cloned(),
        };
        // Docker compares case-insensitively for everything but labels' values.
        let same = actual.is_some_and(|a| match self.attribute {
            Attribute::Label(_) => a == self.value,
            _ => a.eq_ignore_ascii_case(&self.value),
        });
        same == self.equal
    }
}

/// Why a node can't take a task, for the task's pending message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    NotReady,
    NotActive,
    NoDocker,
    Constraint,
    HostPort,
}

/// Whether `node` may run a task of `service` now.
pub fn check_node(state: &ClusterState, node: &Node, service: &Service) -> Result<(), Reject> {
    check_node_with(state, node, service, false)
}

/// Whether `node` may keep running the task of a global service it has: its own task does
/// not count against the host-mode ports.
pub fn check_node_keeping_own(
    state: &ClusterState,
    node: &Node,
    service: &Service,
) -> Result<(), Reject> {
    check_node_with(state, node, service, true)
}

fn check_node_with(
    state: &ClusterState,
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
    // Container tasks need a node whose shoald runs them on a Docker engine.
    if service.spec.task_template.runtime == Runtime::Docker
        && node.description.executor != "docker"
    {
        return Err(Reject::NoDocker);
    }
    let constraints = &service.spec.task_template.placement.constraints;
    if !constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .all(|c| c.matches(node))
    {
        return Err(Reject::Constraint);
    }
    let host_ports = ClusterState::host_ports(service);
    if !host_ports.is_empty() {
        let taken = state.tasks.values().any(|t| {
            t.node_id == node.id
                && is_live(t)
                && !(own_tasks_ok && t.service_id == service.id)
                && state.services.get(&t.service_id).is_some_and(|s| {
                    s.endpoint.ports.iter().any(|p| {
                        p.publish_mode == PublishMode::Host
                            && host_ports.contains(&(p.protocol, p.published_port))
                    })
                })
        });
        if taken {
            return Err(Reject::HostPort);
        }
    }
    Ok(())
}

/// A task that holds (or will hold) resources on its node.
pub fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running && !t.status.state.is_terminal()
}

fn pending_message(rejects: &BTreeMap<Reject, usize>, total: usize) -> String {
    if total == 0 {
        return "no suitable node (the swarm has no nodes)".into();
    }
    let parts: Vec<String> = rejects
        .iter()
        .map(|(r, n)| match r {
            Reject::NotReady => format!("{n} not ready"),
            Reject::NotActive => format!("{n} paused or drained"),
            Reject::NoDocker => format!("{n} without Docker (shoald --executor native)"),
            Reject::Constraint => format!("{n} not matching the constraints"),
            Reject::HostPort => format!("{n} with the host-mode port in use"),
        })
        .collect();
    format!("no suitable node ({total} nodes: {})", parts.join(", "))
}

/// Assigns every unassigned pending task it can. Tasks placed in this pass count towards the
/// spread of the next ones.
pub fn schedule(state: &ClusterState) -> Vec<TaskOp> {
    let mut ops = Vec::new();
    // Live tasks per node, overall and per service.
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_service: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for t in state
        .tasks
        .values()
        .filter(|t| is_live(t) && !t.node_id.is_empty())
    {
        *load.entry(&t.node_id).or_default() += 1;
        *per_service.entry((&t.service_id, &t.node_id)).or_default() += 1;
    }
    // Host ports placed in this pass, which `check_node` can't see yet.
    let mut placed: Vec<(Protocol, u16, &str)> = Vec::new();
    let pending = state.tasks.values().filter(|t| {
        t.node_id.is_empty()
            && t.desired_state <= TaskState::Running
            && t.status.state == TaskState::Pending
    });
    for task in pending {
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        let host_ports = ClusterState::host_ports(service);
        let mut rejects: BTreeMap<Reject, usize> = BTreeMap::new();
        let mut best: Option<(&str, (usize, usize))> = None;
        for node in state.nodes.values() {
            let verdict = check_node(state, node, service).and_then(|()| {
                let clash = host_ports
                    .iter()
                    .any(|(proto, port)| placed.contains(&(*proto, *port, node.id.as_str())));
                if clash { Err(Reject::HostPort) } else { Ok(()) }
            });
            match verdict {
                Err(r) => *rejects.entry(r).or_default() += 1,
                Ok(()) => {
                    let score = (
                        per_service
                            .get(&(service.id.as_str(), node.id.as_str()))
                            .copied()
                            .unwrap_or(0),
                        load.get(node.id.as_str()).copied().unwrap_or(0),
                    );
                    if best.is_none_or(|(_, s)| score < s) {
                        best = Some((&node.id, score));
                    }
                }
            }
        }
        match best {
            Some((node_id, _)) => {
                *load.entry(node_id).or_default() += 1;
                *per_service.entry((&service.id, node_id)).or_default() += 1;
                for (proto, port) in &host_ports {
                    placed.push((*proto, *port, node_id));
                }
                ops.push(TaskOp::Assign {
                    id: task.id.clone(),
                    node_id: node_id.to_string(),
                });
            }
            None => {
                let message = pending_message(&rejects, state.nodes.len());
                if task.status.message != message {
                    let mut status = task.status.clone();
                    status.message = message;
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
