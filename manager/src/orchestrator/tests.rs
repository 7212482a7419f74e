//! Orchestration converges: applying its ops and reconciling again yields nothing more.

use super::*;
use crate::store::Command;
use crate::store::tests::{cluster, service_spec};

const NOW: &str = "2026-11-25T12:00:00Z";

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("task{n:03}")
    }
}

/// Runs orchestrator + scheduler passes, applying each, until nothing changes.
fn settle(state: &mut ClusterState, index: &mut u64, new_id: &mut dyn FnMut() -> String) -> usize {
    let mut passes = 0;
    loop {
        let now = parse_rfc3339(NOW).unwrap();
        let mut ops = reconcile(state, now, new_id);
        ops.extend(crate::scheduler::schedule(state));
        if ops.is_empty() {
            return passes;
        }
        *index += 1;
        state
            .apply(
                *index,
                Command::Tasks {
                    ops,
                    now: NOW.into(),
                },
            )
            .unwrap();
        passes += 1;
        assert!(passes < 10, "orchestration does not converge");
    }
}

fn live_slots(state: &ClusterState, service: &str) -> Vec<u64> {
    let mut v: Vec<u64> = state
        .service_tasks(service)
        .filter(|t| crate::scheduler::is_live(t))
        .map(|t| t.slot)
        .collect();
    v.sort();
    v
}

#[test]
fn scale_up_and_down_converges() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 3, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    assert_eq!(live_slots(&s, "web"), vec![1, 2, 3]);
    assert!(
        s.service_tasks("web")
            .all(|t| t.node_id == "n1" && t.status.state == TaskState::Assigned)
    );

    let mut spec = s.services["web"].spec.clone();
    spec.mode = ServiceMode::Replicated { replicas: 1 };
    let v = s.services["web"].version.index;
    index += 1;
    s.apply(
        index,
        Command::UpdateService {
            id: "web".into(),
            version: v,
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    assert_eq!(live_slots(&s, "web"), vec![1]);
}

#[test]
fn failed_task_is_replaced_after_backoff_and_history_kept() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 1, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    let first = s.service_tasks("web").next().unwrap().id.clone();
    index += 1;
    // The task failed one second "before now": the 1 s restart delay has passed.
    s.apply(
        index,
        Command::Tasks {
            ops: vec![TaskOp::Status {
                id: first.clone(),
                status: TaskStatus {
                    state: TaskState::Failed,
                    timestamp: "2026-11-25T11:59:59Z".into(),
                    ..Default::default()
                },
            }],
            // The leader's clock, which the restart delay counts from.
            now: "2026-11-25T11:59:59Z".into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    let tasks: Vec<&Task> = s.service_tasks("web").collect();
    assert_eq!(tasks.len(), 2, "the failed task stays as history");
    let replacement = tasks.iter().find(|t| t.id != first).unwrap();
    assert_eq!(replacement.slot, 1);
    assert_eq!(replacement.restart_count, 1);
    assert_eq!(s.tasks[&first].desired_state, TaskState::Shutdown);
}

#[test]
fn removed_service_tasks_are_stopped_then_forgotten() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 2, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    index += 1;
    s.apply(
        index,
        Command::RemoveService {
            id: "web".into(),
            now: NOW.into(),
        },
    )
    .unwrap();
    assert!(
        s.tasks
            .values()
            .all(|t| t.desired_state == TaskState::Shutdown)
    );
    let ids: Vec<String> = s.tasks.keys().cloned().collect();
    let ops = ids
        .into_iter()
        .map(|id| TaskOp::Status {
            id,
            status: TaskStatus {
                state: TaskState::Shutdown,
                timestamp: NOW.into(),
                ..Default::default()
            },
        })
        .collect();
    index += 1;
    s.apply(
        index,
        Command::Tasks {
            ops,
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    assert!(s.tasks.is_empty());
}

/// Marks every assigned, live task running (what agents would report).
fn run_all(state: &mut ClusterState, index: &mut u64) {
    let ops: Vec<TaskOp> = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Assigned && t.desired_state == TaskState::Running)
        .map(|t| TaskOp::Status {
            id: t.id.clone(),
            status: TaskStatus {
                state: TaskState::Running,
                timestamp: NOW.into(),
                ..Default::default()
            },
        })
        .collect();
    // Tasks asked to stop report shutdown.
    let stops: Vec<TaskOp> = state
        .tasks
        .values()
        .filter(|t| !t.status.state.is_terminal() && t.desired_state == TaskState::Shutdown)
        .map(|t| TaskOp::Status {
            id: t.id.clone(),
            status: TaskStatus {
                state: TaskState::Shutdown,
                timestamp: NOW.into(),
                ..Default::default()
            },
        })
        .collect();
    *index += 1;
    state
        .apply(
            *index,
            Command::Tasks {
                ops: ops.into_iter().chain(stops).collect(),
                now: NOW.into(),
            },
        )
        .unwrap();
}

fn update_image(state: &mut ClusterState, index: &mut u64, order: UpdateOrder) {
    let mut spec = state.services["web"].spec.clone();
    spec.task_template.container_spec.args = vec!["v2".into()];
    spec.update_config = UpdateConfig {
        parallelism: 1,
        delay: 0,
        order,
        ..Default::default()
    };
    let v = state.services["web"].version.index;
    *index += 1;
    state
        .apply(
            *index,
            Command::UpdateService {
                id: "web".into(),
                version: v,
                spec,
                now: NOW.into(),
            },
        )
        .unwrap();
}

fn versions(state: &ClusterState) -> (usize, usize) {
    let current = state.services["web"].spec_version;
    let live: Vec<&Task> = state
        .service_tasks("web")
        .filter(|t| crate::scheduler::is_live(t))
        .collect();
    (
        live.iter().filter(|t| t.spec_version != current).count(),
        live.iter().filter(|t| t.spec_version == current).count(),
    )
}

/// One orchestration + scheduling pass, applied.
fn step(state: &mut ClusterState, index: &mut u64, new_id: &mut dyn FnMut() -> String) {
    step_at(state, index, new_id, NOW);
}

/// One pass at the leader's time `now`.
fn step_at(
    state: &mut ClusterState,
    index: &mut u64,
    new_id: &mut dyn FnMut() -> String,
    now: &str,
) {
    let mut ops = reconcile(state, parse_rfc3339(now).unwrap(), new_id);
    ops.extend(crate::scheduler::schedule(state));
    *index += 1;
    state
        .apply(
            *index,
            Command::Tasks {
                ops,
                now: now.into(),
            },
        )
        .unwrap();
}

#[test]
fn rolling_update_stop_first_replaces_one_task_at_a_time() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 3, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    run_all(&mut s, &mut index);
    update_image(&mut s, &mut index, UpdateOrder::StopFirst);
    let mut seen = Vec::new();
    for _ in 0..20 {
        step(&mut s, &mut index, &mut new_id);
        let (old, new) = versions(&s);
        seen.push((old, new));
        assert!(
            old + new <= 3,
            "stop-first never runs more than the replicas: {seen:?}"
        );
        assert!(
            old + new >= 2,
            "parallelism 1: at most one slot down at a time: {seen:?}"
        );
        run_all(&mut s, &mut index);
        if versions(&s) == (0, 3) {
            break;
        }
    }
    assert_eq!(versions(&s), (0, 3), "update finished: {seen:?}");
    // Still watched for the monitor period (5 s) after the last new task runs...
    for _ in 0..3 {
        step(&mut s, &mut index, &mut new_id);
        run_all(&mut s, &mut index);
    }
    assert_eq!(
        s.services["web"].update_status.as_ref().unwrap().state,
        "updating"
    );
    // ...then completed.
    step_at(&mut s, &mut index, &mut new_id, "2026-11-25T12:00:06Z");
    assert_eq!(
        s.services["web"].update_status.as_ref().unwrap().state,
        "completed"
    );
}

#[test]
fn rolling_update_start_first_keeps_every_slot_served() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 2, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    run_all(&mut s, &mut index);
    update_image(&mut s, &mut index, UpdateOrder::StartFirst);
    for _ in 0..20 {
        step(&mut s, &mut index, &mut new_id);
        let running: usize = s
            .service_tasks("web")
            .filter(|t| {
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running
            })
            .count();
        assert!(running >= 2, "start-first keeps both slots running");
        run_all(&mut s, &mut index);
        if versions(&s) == (0, 2) {
            break;
        }
    }
    assert_eq!(versions(&s), (0, 2));
}

#[test]
fn stop_first_respects_parallelism_while_agents_are_slow_to_stop() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 3, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    run_all(&mut s, &mut index);
    update_image(&mut s, &mut index, UpdateOrder::StopFirst);
    // Two passes, agents slow to stop (no reports in between).
    step(&mut s, &mut index, &mut new_id);
    step(&mut s, &mut index, &mut new_id);
    step(&mut s, &mut index, &mut new_id);
    let stopping = s
        .service_tasks("web")
        .filter(|t| t.desired_state == TaskState::Shutdown)
        .count();
    eprintln!("stopping after 3 passes: {stopping}");
    assert!(
        stopping <= 1,
        "parallelism 1 but {stopping} slots stopping at once"
    );
}

#[test]
fn a_duplicate_task_in_a_slot_is_shut_down() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 1, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    // Two leaders (or a timed-out retry) each created a task for slot 1.
    let svc = s.services["web"].clone();
    let mk = |id: &str| {
        let mut t = new_task(&s, &svc, &SlotKey::Slot(1), 0, &mut || id.to_string());
        t.id = id.into();
        TaskOp::Create(Box::new(t))
    };
    let ops = vec![mk("dupA"), mk("dupB")];
    index += 1;
    s.apply(
        index,
        Command::Tasks {
            ops,
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    run_all(&mut s, &mut index);
    settle(&mut s, &mut index, &mut new_id);
    assert_eq!(
        live_slots(&s, "web"),
        vec![1],
        "replicas=1 but live slots: {:?}",
        live_slots(&s, "web")
    );
}

#[test]
fn tasks_of_a_removed_node_end_and_free_their_addresses() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    // second worker node
    let mut n2 = s.nodes["n1"].clone();
    n2.id = "n2".into();
    n2.spec.role = NodeRole::Worker;
    n2.manager_status = None;
    s.apply(3, Command::AddNode(Box::new(n2))).unwrap();
    s.apply(
        4,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 2, &[(8080, 80)], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    run_all(&mut s, &mut index);
    let free_before = s.alloc.as_ref().unwrap().free_addresses("ingress");
    index += 1;
    s.apply(
        index,
        Command::NodeStatus {
            id: "n2".into(),
            status: NodeStatus {
                state: NodeState::Down,
                message: String::new(),
                addr: String::new(),
            },
            description: None,
            now: NOW.into(),
        },
    )
    .unwrap();
    index += 1;
    s.apply(
        index,
        Command::RemoveNode {
            id: "n2".into(),
            force: false,
        },
    )
    .unwrap();
    for _ in 0..5 {
        settle(&mut s, &mut index, &mut new_id);
    }
    let stuck: Vec<_> = s
        .tasks
        .values()
        .filter(|t| t.node_id == "n2")
        .map(|t| (t.id.clone(), t.status.state, t.desired_state))
        .collect();
    let free_after = s.alloc.as_ref().unwrap().free_addresses("ingress");
    eprintln!("stuck={stuck:?} free before {free_before} after {free_after}");
    assert!(!stuck.is_empty());
    assert!(
        stuck
            .iter()
            .all(|(_, state, _)| *state == TaskState::Orphaned),
        "tasks of a removed node end: {stuck:?}"
    );
    // The orphan's address is free again and the replacement on n1 holds one; the removed
    // node's own ingress address is free too.
    assert_eq!(
        free_after,
        free_before + 1,
        "orphaned addresses are released"
    );
}

#[test]
fn a_global_service_with_a_host_port_settles() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    let mut spec = service_spec("agent", 1, &[(9100, 9100)], &[]);
    spec.mode = ServiceMode::Global {};
    spec.endpoint_spec.ports[0].publish_mode = PublishMode::Host;
    spec.endpoint_spec.mode = EndpointMode::Dnsrr;
    s.apply(
        2,
        Command::CreateService {
            id: "agent".into(),
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    for i in 0..6 {
        step(&mut s, &mut index, &mut new_id);
        run_all(&mut s, &mut index);
        let total = s.service_tasks("agent").count();
        let live = s
            .service_tasks("agent")
            .filter(|t| crate::scheduler::is_live(t))
            .count();
        eprintln!("pass {i}: tasks {total}, live {live}");
    }
    let now = parse_rfc3339(NOW).unwrap();
    let ops = reconcile(&s, now, &mut new_id);
    assert!(
        ops.is_empty(),
        "global host-port service keeps churning: {ops:?}"
    );
}

#[test]
fn scaling_a_slot_away_and_back_starts_it_afresh() {
    let mut s = cluster((30000, 32767));
    let mut index = 10;
    let mut new_id = ids();
    let mut spec = service_spec("web", 1, &[], &[]);
    spec.task_template.restart_policy.condition = RestartCondition::None;
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    let first = s.service_tasks("web").next().unwrap().id.clone();
    index += 1;
    s.apply(
        index,
        Command::Tasks {
            ops: vec![TaskOp::Status {
                id: first,
                status: TaskStatus {
                    state: TaskState::Failed,
                    timestamp: NOW.into(),
                    ..Default::default()
                },
            }],
            now: NOW.into(),
        },
    )
    .unwrap();
    settle(&mut s, &mut index, &mut new_id);
    assert!(
        live_slots(&s, "web").is_empty(),
        "restart condition none: not restarted"
    );
    let scale = |s: &mut ClusterState, index: &mut u64, n: u64| {
        let mut spec = s.services["web"].spec.clone();
        spec.mode = ServiceMode::Replicated { replicas: n };
        let v = s.services["web"].version.index;
        *index += 1;
        s.apply(
            *index,
            Command::UpdateService {
                id: "web".into(),
                version: v,
                spec,
                now: NOW.into(),
            },
        )
        .unwrap();
    };
    scale(&mut s, &mut index, 0);
    settle(&mut s, &mut index, &mut new_id);
    assert_eq!(
        s.service_tasks("web").count(),
        0,
        "the removed slot's history is gone"
    );
    scale(&mut s, &mut index, 1);
    settle(&mut s, &mut index, &mut new_id);
    assert_eq!(live_slots(&s, "web"), vec![1], "a fresh task for the slot");
    assert_eq!(s.service_tasks("web").next().unwrap().restart_count, 0);
}
