//! Turns services into tasks: one live task per replica slot (or per eligible node for global
//! services), restarts with backoff (and swarmkit's restart window), scale up and down,
//! rolling updates with failure monitoring (pause, continue or roll back), draining,
//! removal and history trimming. Pure: it reads the state and the clock and returns task
//! ops that the leader proposes; applying them and running `reconcile` again yields no
//! further ops.

use crate::scheduler::{Usage, check_node_keeping_own};
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

/// Whether `delay` has passed since the stored time `stamped`. Times are stamped by the
/// leader's wall clock; one after now comes from a clock that was ahead (this one jumped
/// back, or leadership moved to a manager whose clock is behind) and counts as long past:
/// the wait is cut short once, where it would otherwise last as long as the jump, hours.
fn waited(stamped: i128, now_ns: i128, delay: i128) -> bool {
    stamped > now_ns || now_ns >= stamped + delay
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
    let usage = Usage::of(state);
    for service in state.services.values() {
        let slots = by_service.get(service.id.as_str()).unwrap_or(&empty);
        let wanted: Vec<SlotKey> = match service.spec.mode {
            ServiceMode::Replicated { replicas } => (1..=replicas).map(SlotKey::Slot).collect(),
            ServiceMode::Global {} => state
                .nodes
                .values()
                .filter(|n| check_node_keeping_own(&usage, n, service).is_ok())
                .map(|n| SlotKey::Node(n.id.clone()))
                .collect(),
        };
        reconcile_service(state, service, slots, &wanted, now_ns, new_id, &mut ops);
        // A restart window counts restarts from the slot's history: keep enough of it.
        let policy = &service.spec.task_template.restart_policy;
        let keep = if policy.window > 0 {
            retention.max(policy.max_attempts as usize)
        } else {
            retention
        };
        trim_history(slots, keep, &mut ops);
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
    let update_state = service.update_status.as_ref().map(|u| u.state.as_str());
    let rolling_back = matches!(update_state, Some("rollback_started" | "rollback_paused"));
    // A rollback rolls out with the rollback config of the spec it returns to.
    let default_rollback = UpdateConfig::default();
    let config = if rolling_back {
        service
            .spec
            .rollback_config
            .as_ref()
            .unwrap_or(&default_rollback)
    } else {
        &service.spec.update_config
    };
    let order = config.order;
    let parallelism = match config.parallelism {
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
    let running_since = |t: &Task| {
        state
            .task_times
            .get(&t.id)
            .filter(|x| !x.running_at.is_empty())
            .map_or_else(|| ts(&t.updated_at), |x| ts(&x.running_at))
    };
    let mut in_flight = 0usize;
    let mut last_running_ns: i128 = 0;
    for tasks in live.values() {
        let fresh: Vec<&&Task> = tasks.iter().filter(|t| !outdated(t)).collect();
        let old: Vec<&&Task> = tasks.iter().filter(|t| outdated(t)).collect();
        for f in &fresh {
            if f.status.state != TaskState::Running {
                // A restart of a failed new task is the restart policy's, not the rollout's.
                if f.restart_count == 0 {
                    in_flight += 1;
                }
            } else {
                // The leader's clock, unlike the agent's timestamp.
                last_running_ns = last_running_ns.max(running_since(f));
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
    // stopping): it counts against the update's parallelism, unless its new task failed,
    // which is the failure monitor's business and the restart policy's, not the rollout's.
    in_flight += wanted
        .iter()
        .filter(|k| live.get(*k).is_none_or(|ts| ts.is_empty()))
        .filter(|k| {
            slots
                .get(*k)
                .and_then(|h| h.last())
                .is_none_or(|t| outdated(t) || !t.status.state.is_terminal())
        })
        .count();
    let outdated_slots: Vec<SlotKey> = wanted
        .iter()
        .filter(|k| {
            live.get(*k)
                .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| outdated(t)))
        })
        .cloned()
        .collect();

    // Failure monitoring, while a rollout (or a rollback) is under way.
    let monitor = i128::from(if config.monitor == 0 {
        UpdateConfig::DEFAULT_MONITOR
    } else {
        config.monitor
    });
    let mut stopped = matches!(update_state, Some("paused" | "rollback_paused"));
    let rolling = matches!(update_state, Some("updating" | "rollback_started"));
    if rolling && config.failure_action != FailureAction::Continue {
        let status = service.update_status.as_ref().expect("rolling");
        let failures = rollout_failures(state, service, slots, ts(&status.started_at), monitor);
        // swarmkit's rule: failures over the slots to update, strictly above the ratio.
        let total = wanted.len().max(1);
        let ratio = config.max_failure_ratio.0;
        if failures.len() as f32 / total as f32 > ratio {
            // The failure that crossed the ratio names the reason.
            let crossing = ((ratio * total as f32).floor() as usize).min(failures.len() - 1);
            let task = failures[crossing];
            let (what, new_state) = if rolling_back {
                ("rollback paused", "rollback_paused")
            } else if config.failure_action == FailureAction::Rollback {
                ("update rolled back", "")
            } else {
                ("update paused", "paused")
            };
            let message = format!(
                "{what} due to failure or early termination of task {}: {}",
                task.id,
                failure_text(task)
            );
            if new_state.is_empty() {
                ops.push(TaskOp::Rollback {
                    service_id: service.id.clone(),
                    from: service.spec_version,
                    message,
                });
                // The next pass works from the previous spec.
                return;
            }
            let mut status = status.clone();
            status.state = new_state.into();
            status.message = message;
            ops.push(TaskOp::ServiceUpdateStatus {
                service_id: service.id.clone(),
                status: Some(status),
            });
            stopped = true;
        }
    }

    let delay_ns = i128::from(config.delay);
    let batch_allowed = in_flight == 0 || parallelism == usize::MAX;
    let mut budget = if !stopped && batch_allowed && waited(last_running_ns, now_ns, delay_ns) {
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
    // Done once every slot runs the spec and the last new task has run for the monitor
    // period (longer than the delay, as swarmkit waits).
    let watch_ns = if delay_ns >= monitor {
        delay_ns + 1_000_000_000
    } else {
        monitor
    };
    if rolling
        && !stopped
        && outdated_slots.is_empty()
        && in_flight == 0
        && waited(last_running_ns, now_ns, watch_ns)
    {
        let mut status = service.update_status.clone().expect("rolling");
        (status.state, status.message) = if rolling_back {
            ("rollback_completed".into(), "rollback completed".into())
        } else {
            ("completed".into(), "update completed".into())
        };
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
                let exhausted = policy.max_attempts > 0
                    && if policy.window == 0 {
                        restarts > policy.max_attempts
                    } else {
                        restarts_in_window(state, service, history, last, policy.window)
                            >= policy.max_attempts
                    };
                if !allowed || exhausted {
                    continue;
                }
                let backoff = (i128::from(policy.delay) << last.restart_count.min(10))
                    .min(MAX_RESTART_DELAY_NS);
                if !waited(ts(&last.updated_at), now_ns, backoff) {
                    continue;
                }
            }
        }
        ops.push(TaskOp::Create(Box::new(new_task(
            state, service, key, restarts, new_id,
        ))));
    }
}

/// When a task ended, by the leader's clock.
fn ended_at(state: &ClusterState, t: &Task) -> i128 {
    state
        .task_times
        .get(&t.id)
        .filter(|x| !x.ended_at.is_empty())
        .map_or_else(|| ts(&t.updated_at), |x| ts(&x.ended_at))
}

/// swarmkit's restart window: the restarts of this slot (tasks made as restarts, of the
/// current spec) within `window` before `last` ended. Counted at `last`'s end, not now, so
/// a slot that used up its attempts stays down, as in swarmkit.
fn restarts_in_window(
    state: &ClusterState,
    service: &Service,
    history: &[&Task],
    last: &Task,
    window: u64,
) -> u64 {
    let end = ended_at(state, last);
    let since = end - i128::from(window);
    history
        .iter()
        .filter(|t| t.spec_version == service.spec_version && t.restart_count > 0)
        .filter(|t| {
            let created = ts(&t.created_at);
            created > since && created <= end
        })
        .count() as u64
}

/// The tasks this rollout made (current spec, created since it started, not restarts) that
/// ended by themselves within `monitor` of starting (or before they started), oldest
/// first. A clean exit counts only when the restart policy says tasks should keep running.
fn rollout_failures<'a>(
    state: &ClusterState,
    service: &Service,
    slots: &BTreeMap<SlotKey, Vec<&'a Task>>,
    started_ns: i128,
    monitor: i128,
) -> Vec<&'a Task> {
    let any = service.spec.task_template.restart_policy.condition == RestartCondition::Any;
    let mut failed: Vec<(i128, &Task)> = slots
        .values()
        .flatten()
        .copied()
        .filter(|t| {
            t.spec_version == service.spec_version
                && t.restart_count == 0
                && ts(&t.created_at) >= started_ns
        })
        .filter(|t| match t.status.state {
            TaskState::Failed | TaskState::Rejected => true,
            TaskState::Complete => any,
            _ => false,
        })
        .filter_map(|t| {
            let end = ended_at(state, t);
            let early = state
                .task_times
                .get(&t.id)
                .filter(|x| !x.running_at.is_empty())
                .is_none_or(|x| end - ts(&x.running_at) <= monitor);
            early.then_some((end, t))
        })
        .collect();
    failed.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    failed.into_iter().map(|(_, t)| t).collect()
}

/// What a failed task's status says, for the update status message.
fn failure_text(t: &Task) -> String {
    let exit = t
        .status
        .container_status
        .as_ref()
        .map(|c| c.exit_code)
        .filter(|c| *c != 0);
    let why = if !t.status.err.is_empty() {
        t.status.err.clone()
    } else if !t.status.message.is_empty() {
        t.status.message.clone()
    } else {
        t.status.state.to_string()
    };
    match exit {
        Some(code) if !why.contains("exit") => format!("{why} (exit code {code})"),
        _ => why,
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
