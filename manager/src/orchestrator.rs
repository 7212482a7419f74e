//! Turns services into tasks: one live task per replica slot (or per eligible node for global
//! services), restarts with backoff, scale up and down, rolling updates, draining, removal
//! and history trimming. Pure: it reads the state and returns task ops that the leader
//! proposes; applying them and running `reconcile` again yields no further ops.

use crate::scheduler::check_node_keeping_own;
use crate::store::{ClusterState, TaskOp};
use shoal_api::objects::*;
use shoal_api::parse_rfc3339;
use std::collections::BTreeMap;

/// Longest wait between restarts of a failing slot.
const MAX_RESTART_DELAY_NS: i128 = 60_000_000_000;

/// Where a task belongs: a replica slot, or a node for global services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
    Slot(u64),
    Node(String),
}

fn key_of(t: &Task) -> SlotKey {
    if t.slot > 0 {
        SlotKey::Slot(t.slot)
    } else {
        SlotKey::Node(t.node_id.clone())
    }
}

fn ts(s: &str) -> i128 {
    parse_rfc3339(s).unwrap_or(0)
}

/// Whether a node can keep running the tasks it has.
fn node_usable(state: &ClusterState, node_id: &str) -> bool {
    state.nodes.get(node_id).is_some_and(|n| {
        n.status.state != NodeState::Down && n.spec.availability != Availability::Drain
    })
}

pub fn reconcile(
    state: &ClusterState,
    now_ns: i128,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<TaskOp> {
    let mut ops = Vec::new();
    let retention = state
        .cluster
        .as_ref()
        .map(|c| c.cluster.spec.task_history_retention_limit)
        .unwrap_or(5) as usize;

    let mut by_service: BTreeMap<&str, BTreeMap<SlotKey, Vec<&Task>>> = BTreeMap::new();
    for t in state.tasks.values() {
        by_service
            .entry(&t.service_id)
            .or_default()
            .entry(key_of(t))
            .or_default()
            .push(t);
    }
    for slots in by_service.values_mut() {
        for tasks in slots.values_mut() {
            tasks.sort_by_key(|t| (ts(&t.created_at), t.id.clone()));
        }
    }

    // Tasks of removed services: stop them, and forget them once they are gone.
    for (service_id, slots) in &by_service {
        if state.services.contains_key(*service_id) {
            continue;
        }
        for t in slots.values().flatten() {
            let gone = t.status.state.is_terminal() || !node_usable(state, &t.node_id);
            if gone {
                ops.push(TaskOp::Delete { id: t.id.clone() });
            } else if t.desired_state < TaskState::Shutdown {
                ops.push(TaskOp::SetDesired {
                    id: t.id.clone(),
                    state: TaskState::Shutdown,
                });
            }
        }
    }

    let empty = BTreeMap::new();
    for service in state.services.values() {
        let slots = by_service.get(service.id.as_str()).unwrap_or(&empty);
        let wanted: Vec<SlotKey> = match service.spec.mode {
            ServiceMode::Replicated { replicas } => (1..=replicas).map(SlotKey::Slot).collect(),
            ServiceMode::Global {} => state
                .nodes
                .values()
                .filter(|n| check_node_keeping_own(state, n, service).is_ok())
                .map(|n| SlotKey::Node(n.id.clone()))
                .collect(),
        };
        reconcile_service(state, service, slots, &wanted, now_ns, new_id, &mut ops);
        trim_history(slots, retention, &mut ops);
    }
    ops
}

fn reconcile_service(
    state: &ClusterState,
    service: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    wanted: &[SlotKey],
    now_ns: i128,
    new_id: &mut dyn FnMut() -> String,
    ops: &mut Vec<TaskOp>,
) {
    let shutdown = |t: &Task, ops: &mut Vec<TaskOp>| {
        if t.desired_state < TaskState::Shutdown {
            ops.push(TaskOp::SetDesired {
                id: t.id.clone(),
                state: TaskState::Shutdown,
            });
        }
    };
    let order = service.spec.update_config.order;
    let parallelism = match service.spec.update_config.parallelism {
        0 => usize::MAX,
        p => p as usize,
    };

    // Pass 1: retire dead tasks and tasks that can't stay where they are; find each slot's
    // live tasks.
    let mut live: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for (key, tasks) in slots {
        for t in tasks {
            if t.desired_state > TaskState::Running {
                continue;
            }
            let dead = t.status.state.is_terminal();
            let misplaced = !t.node_id.is_empty() && !node_usable(state, &t.node_id);
            let unwanted = !wanted.contains(key);
            if dead || misplaced || unwanted {
                shutdown(t, ops);
            } else {
                live.entry(key.clone()).or_default().push(t);
            }
        }
    }
    // One current task per slot: a second one (a retried proposal, or a new leader working
    // from a state that missed its predecessor's last entries) is shut down, the newest kept.
    for tasks in live.values_mut() {
        let current: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.spec_version == service.spec_version)
            .collect();
        if let Some((keep, extra)) = current.split_last() {
            for t in extra {
                shutdown(t, ops);
            }
            let keep_id = keep.id.clone();
            tasks.retain(|t| t.spec_version != service.spec_version || t.id == keep_id);
        }
    }

    // Pass 2: rolling update bookkeeping.
    let outdated = |t: &Task| t.spec_version != service.spec_version;
    let mut in_flight = 0usize;
    let mut last_running_ns: i128 = 0;
    for tasks in live.values() {
        let fresh: Vec<&&Task> = tasks.iter().filter(|t| !outdated(t)).collect();
        let old: Vec<&&Task> = tasks.iter().filter(|t| outdated(t)).collect();
        for f in &fresh {
            if f.status.state != TaskState::Running {
                in_flight += 1;
            } else {
                // updated_at comes from the leader's clock, unlike the agent's timestamp.
                last_running_ns = last_running_ns.max(ts(&f.updated_at));
            }
        }
        // start-first: the old task goes once its replacement runs.
        if fresh.iter().any(|f| f.status.state == TaskState::Running) {
            for o in &old {
                shutdown(o, ops);
            }
        }
    }
    // A wanted slot without a live task is being refilled (or its old task is still
    // stopping): it counts against the update's parallelism.
    in_flight += wanted
        .iter()
        .filter(|k| live.get(*k).is_none_or(|ts| ts.is_empty()))
        .count();
    let outdated_slots: Vec<SlotKey> = wanted
        .iter()
        .filter(|k| {
            live.get(*k)
                .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| outdated(t)))
        })
        .cloned()
        .collect();
    let delay_ns = i128::from(service.spec.update_config.delay);
    let batch_allowed = in_flight == 0 || parallelism == usize::MAX;
    let mut budget = if batch_allowed && now_ns >= last_running_ns + delay_ns {
        parallelism.saturating_sub(in_flight)
    } else {
        0
    };
    for key in &outdated_slots {
        if budget == 0 {
            break;
        }
        budget -= 1;
        match order {
            UpdateOrder::StopFirst => {
                for t in &live[key] {
                    shutdown(t, ops);
                }
            }
            UpdateOrder::StartFirst => {
                ops.push(TaskOp::Create(Box::new(new_task(
                    state, service, key, 0, new_id,
                ))));
            }
        }
    }
    let updating = service
        .update_status
        .as_ref()
        .is_some_and(|u| u.state == "updating");
    if updating && outdated_slots.is_empty() && in_flight == 0 {
        let mut status = service.update_status.clone().expect("checked");
        status.state = "completed".into();
        status.message = "update completed".into();
        status.completed_at = shoal_api::format_unix_nanos(now_ns);
        ops.push(TaskOp::ServiceUpdateStatus {
            service_id: service.id.clone(),
            status: Some(status),
        });
    }

    // Slots removed by a scale-down lose their history once their tasks have stopped, as
    // swarmkit's task reaper does: a later scale-up starts them afresh, without the restart
    // backoff (or a "never restart" policy) of tasks that belonged to the old slot.
    for (key, tasks) in slots {
        if matches!(key, SlotKey::Slot(_)) && !wanted.contains(key) {
            for t in tasks {
                if t.status.state.is_terminal() && t.desired_state >= TaskState::Shutdown {
                    ops.push(TaskOp::Delete { id: t.id.clone() });
                }
            }
        }
    }

    // Pass 3: fill empty slots, honouring the restart policy.
    for key in wanted {
        if live.get(key).is_some_and(|ts| !ts.is_empty()) {
            continue;
        }
        let history = slots.get(key).map(|v| v.as_slice()).unwrap_or(&[]);
        // A slot whose last task is still being stopped (stop-first update) waits for it,
        // unless that task's node is gone.
        let stopping = history.iter().any(|t| {
            !t.status.state.is_terminal()
                && t.desired_state >= TaskState::Shutdown
                && !t.node_id.is_empty()
                && node_usable(state, &t.node_id)
        });
        if stopping {
            continue;
        }
        let last = history.last();
        let mut restarts = 0;
        if let Some(last) = last {
            let failed_itself = last.status.state.is_terminal()
                && matches!(
                    last.status.state,
                    TaskState::Failed | TaskState::Complete | TaskState::Rejected
                )
                && !outdated(last);
            if failed_itself {
                let policy = &service.spec.task_template.restart_policy;
                let allowed = match policy.condition {
                    RestartCondition::None => false,
                    RestartCondition::OnFailure => last.status.state != TaskState::Complete,
                    RestartCondition::Any => true,
                };
                restarts = last.restart_count + 1;
                if !allowed || (policy.max_attempts > 0 && restarts > policy.max_attempts) {
                    continue;
                }
                let backoff = (i128::from(policy.delay) << last.restart_count.min(10))
                    .min(MAX_RESTART_DELAY_NS);
                if now_ns < ts(&last.updated_at) + backoff {
                    continue;
                }
            }
        }
        ops.push(TaskOp::Create(Box::new(new_task(
            state, service, key, restarts, new_id,
        ))));
    }
}

fn new_task(
    _state: &ClusterState,
    service: &Service,
    key: &SlotKey,
    restart_count: u64,
    new_id: &mut dyn FnMut() -> String,
) -> Task {
    let (slot, node_id) = match key {
        SlotKey::Slot(s) => (*s, String::new()),
        SlotKey::Node(n) => (0, n.clone()),
    };
    Task {
        id: new_id(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: service.id.clone(),
        slot,
        node_id,
        spec: service.spec.task_template.clone(),
        spec_version: service.spec_version,
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: Vec::new(),
        restart_count,
    }
}

/// Keeps the newest `retention` finished tasks of each slot for `service ps`.
fn trim_history(slots: &BTreeMap<SlotKey, Vec<&Task>>, retention: usize, ops: &mut Vec<TaskOp>) {
    for tasks in slots.values() {
        let finished: Vec<&&Task> = tasks
            .iter()
            .filter(|t| t.status.state.is_terminal() && t.desired_state >= TaskState::Shutdown)
            .collect();
        if finished.len() > retention {
            for t in &finished[..finished.len() - retention] {
                ops.push(TaskOp::Delete { id: t.id.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests;
