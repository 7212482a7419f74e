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

/// Service web with one task, which then failed at `failed_at` by the leader's clock (the
/// time the restart delay counts from).
fn web_with_a_failed_task(failed_at: &str) -> (ClusterState, u64, impl FnMut() -> String, String) {
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
    s.apply(
        index,
        Command::Tasks {
            ops: vec![TaskOp::Status {
                id: first.clone(),
                status: TaskStatus {
                    state: TaskState::Failed,
                    timestamp: failed_at.into(),
                    ..Default::default()
                },
            }],
            now: failed_at.into(),
        },
    )
    .unwrap();
    (s, index, new_id, first)
}

#[test]
fn failed_task_is_replaced_after_backoff_and_history_kept() {
    // The task failed one second "before now": the 1 s restart delay has passed.
    let (mut s, mut index, mut new_id, first) = web_with_a_failed_task("2026-11-25T11:59:59Z");
    settle(&mut s, &mut index, &mut new_id);
    let tasks: Vec<&Task> = s.service_tasks("web").collect();
    assert_eq!(tasks.len(), 2, "the failed task stays as history");
    let replacement = tasks.iter().find(|t| t.id != first).unwrap();
    assert_eq!(replacement.slot, 1);
    assert_eq!(replacement.restart_count, 1);
    assert_eq!(s.tasks[&first].desired_state, TaskState::Shutdown);
}

#[test]
fn a_failure_stamped_by_a_clock_ahead_of_now_does_not_hold_the_restart() {
    // The leader that saw the failure had a clock 3 hours ahead; this one is right.
    let (s, _, mut new_id, _) = web_with_a_failed_task("2026-11-25T15:00:00Z");
    let restarts: Vec<TaskOp> = reconcile(&s, parse_rfc3339(NOW).unwrap(), &mut new_id)
        .into_iter()
        .filter(|op| matches!(op, TaskOp::Create(_)))
        .collect();
    assert_eq!(
        restarts.len(),
        1,
        "restarted now, not once the clock reaches the 3 hours of the jump"
    );
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
    run_all_at(state, index, NOW);
}

/// The same, reported to the leader at `now`.
fn run_all_at(state: &mut ClusterState, index: &mut u64, now: &str) {
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
                now: now.into(),
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

/// `NOW` plus `s` seconds.
fn at(s: u64) -> String {
    shoal_api::format_unix_nanos(parse_rfc3339(NOW).unwrap() + i128::from(s) * 1_000_000_000)
}

/// An agent's report that task `id` ended in `state`, seen by the leader at `now`.
fn end_task(s: &mut ClusterState, index: &mut u64, id: &str, state: TaskState, now: &str) {
    *index += 1;
    s.apply(
        *index,
        Command::Tasks {
            ops: vec![TaskOp::Status {
                id: id.into(),
                status: TaskStatus {
                    state,
                    timestamp: now.into(),
                    err: "task: non-zero exit (1)".into(),
                    container_status: Some(ContainerStatus {
                        pid: 0,
                        exit_code: 1,
                    }),
                    ..Default::default()
                },
            }],
            now: now.into(),
        },
    )
    .unwrap();
}

/// The service's live task in `slot`.
fn live_in(s: &ClusterState, slot: u64) -> Option<&Task> {
    s.service_tasks("web")
        .find(|t| t.slot == slot && crate::scheduler::is_live(t))
}

#[test]
fn restart_attempts_count_within_the_window_table() {
    // max_attempts 2; the task of slot 1 fails at 1 s, 4 s and 8 s after NOW, each restart
    // being made once the doubling backoff (1 s, 2 s, 4 s) has passed.
    struct Case {
        name: &'static str,
        window_s: u64,
        restarted_after_third_failure: bool,
    }
    let cases = [
        Case {
            name: "no window: two restarts in all, then the slot stays down",
            window_s: 0,
            restarted_after_third_failure: false,
        },
        Case {
            name: "10 s window holds both earlier restarts: down",
            window_s: 10,
            restarted_after_third_failure: false,
        },
        Case {
            name: "3 s window holds only the last restart: restarted again",
            window_s: 3,
            restarted_after_third_failure: true,
        },
    ];
    for case in cases {
        let mut s = cluster((30000, 32767));
        let mut index = 10;
        let mut new_id = ids();
        let mut spec = service_spec("web", 1, &[], &[]);
        spec.task_template.restart_policy = RestartPolicy {
            condition: RestartCondition::Any,
            delay: 1_000_000_000,
            max_attempts: 2,
            window: case.window_s * 1_000_000_000,
        };
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
        for (fail_s, restart_s) in [(1, 3), (4, 7), (8, 13)] {
            let id = live_in(&s, 1).expect("a live task").id.clone();
            end_task(&mut s, &mut index, &id, TaskState::Failed, &at(fail_s));
            step_at(&mut s, &mut index, &mut new_id, &at(restart_s));
            step_at(&mut s, &mut index, &mut new_id, &at(restart_s));
        }
        assert_eq!(
            live_in(&s, 1).is_some(),
            case.restarted_after_third_failure,
            "case: {}",
            case.name
        );
        // The decision was taken at the failure: time passing changes nothing.
        step_at(&mut s, &mut index, &mut new_id, &at(600));
        assert_eq!(
            live_in(&s, 1).is_some(),
            case.restarted_after_third_failure,
            "case: {} (later)",
            case.name
        );
    }
}

/// A 3-replica service running `args: []`, then updated to `args: [v2]` with `config`.
fn updating(config: UpdateConfig) -> (ClusterState, u64, impl FnMut() -> String) {
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
    let mut spec = s.services["web"].spec.clone();
    spec.task_template.container_spec.args = vec!["v2".into()];
    spec.update_config = config;
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
    (s, index, new_id)
}

/// Steps (agents answering at once) until a task of the new spec runs; returns its id.
fn first_new_running(
    s: &mut ClusterState,
    index: &mut u64,
    new_id: &mut dyn FnMut() -> String,
) -> String {
    for _ in 0..6 {
        step(s, index, new_id);
        run_all(s, index);
        let v = s.services["web"].spec_version;
        if let Some(t) = s
            .service_tasks("web")
            .find(|t| t.spec_version == v && t.status.state == TaskState::Running)
        {
            return t.id.clone();
        }
    }
    panic!("no new task runs");
}

fn update_state(s: &ClusterState) -> (String, String) {
    let u = s.services["web"].update_status.clone().unwrap();
    (u.state, u.message)
}

fn args_of_live(s: &ClusterState) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = s
        .service_tasks("web")
        .filter(|t| crate::scheduler::is_live(t))
        .map(|t| t.spec.container_spec.args.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failing_rollout_follows_its_failure_action_table() {
    struct Case {
        name: &'static str,
        action: FailureAction,
        ratio: f32,
        /// Seconds after NOW (when the new task started) at which it fails.
        fails_at: u64,
        state: &'static str,
        message: &'static str,
        /// Args of the live tasks once things settle, sorted.
        args: &'static [&'static [&'static str]],
    }
    let cases = [
        Case {
            name: "pause: the rollout stops with the failed task named",
            action: FailureAction::Pause,
            ratio: 0.0,
            fails_at: 2,
            state: "paused",
            message: "update paused due to failure or early termination of task",
            // The failed slot restarts on the new spec; the others keep the old one.
            args: &[&[], &[], &["v2"]],
        },
        Case {
            name: "a failure after the monitor period is not the update's",
            action: FailureAction::Pause,
            ratio: 0.0,
            fails_at: 10,
            state: "completed",
            message: "update completed",
            args: &[&["v2"], &["v2"], &["v2"]],
        },
        Case {
            name: "one failure in three is within a ratio of 0.5",
            action: FailureAction::Pause,
            ratio: 0.5,
            fails_at: 2,
            state: "completed",
            message: "update completed",
            args: &[&["v2"], &["v2"], &["v2"]],
        },
        Case {
            name: "continue: the rollout goes on",
            action: FailureAction::Continue,
            ratio: 0.0,
            fails_at: 2,
            state: "completed",
            message: "update completed",
            args: &[&["v2"], &["v2"], &["v2"]],
        },
        Case {
            name: "rollback: the previous spec comes back by itself",
            action: FailureAction::Rollback,
            ratio: 0.0,
            fails_at: 2,
            state: "rollback_completed",
            message: "rollback completed",
            args: &[&[], &[], &[]],
        },
    ];
    for case in cases {
        let (mut s, mut index, mut new_id) = updating(UpdateConfig {
            parallelism: 1,
            failure_action: case.action,
            max_failure_ratio: Ratio(case.ratio),
            ..Default::default()
        });
        let old_version = s.services["web"].previous_spec.clone();
        let failed = first_new_running(&mut s, &mut index, &mut new_id);
        end_task(
            &mut s,
            &mut index,
            &failed,
            TaskState::Failed,
            &at(case.fails_at),
        );
        // Let it settle: agents answer at once, the clock moves on (restart backoff,
        // monitor periods).
        let mut messages = Vec::new();
        for t in 0..30 {
            let now = at(case.fails_at + 1 + t);
            step_at(&mut s, &mut index, &mut new_id, &now);
            run_all_at(&mut s, &mut index, &now);
            messages.push(update_state(&s));
        }
        let (state, message) = update_state(&s);
        assert_eq!(state, case.state, "case: {}: {messages:?}", case.name);
        assert!(
            message.starts_with(case.message),
            "case: {}: {message}",
            case.name
        );
        let want: Vec<Vec<String>> = case
            .args
            .iter()
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .collect();
        assert_eq!(args_of_live(&s), want, "case: {}", case.name);
        match case.action {
            FailureAction::Pause if case.state == "paused" => {
                assert!(message.contains(&failed), "{message}");
                assert!(message.contains("non-zero exit"), "{message}");
            }
            FailureAction::Rollback => {
                let rolled = messages
                    .iter()
                    .find(|(st, _)| st == "rollback_started")
                    .expect("rollback_started seen");
                assert!(
                    rolled.1.starts_with(&format!(
                        "update rolled back due to failure or early termination of task {failed}"
                    )),
                    "{rolled:?}"
                );
                let svc = &s.services["web"];
                assert_eq!(Some(svc.spec.clone()), old_version);
                assert!(svc.previous_spec.is_none(), "swarmkit forgets it");
            }
            _ => {}
        }
    }
}

#[test]
fn a_rollback_keeps_the_tasks_that_were_not_updated_yet() {
    let (mut s, mut index, mut new_id) = updating(UpdateConfig {
        parallelism: 1,
        failure_action: FailureAction::Rollback,
        ..Default::default()
    });
    let untouched: Vec<String> = s
        .service_tasks("web")
        .filter(|t| crate::scheduler::is_live(t))
        .map(|t| t.id.clone())
        .collect();
    let failed = first_new_running(&mut s, &mut index, &mut new_id);
    end_task(&mut s, &mut index, &failed, TaskState::Failed, &at(1));
    for t in 0..20 {
        let now = at(2 + t);
        step_at(&mut s, &mut index, &mut new_id, &now);
        run_all_at(&mut s, &mut index, &now);
    }
    assert_eq!(update_state(&s).0, "rollback_completed");
    let live: Vec<String> = s
        .service_tasks("web")
        .filter(|t| crate::scheduler::is_live(t))
        .map(|t| t.id.clone())
        .collect();
    let kept = live.iter().filter(|id| untouched.contains(id)).count();
    assert_eq!(
        kept, 2,
        "the two slots never updated keep their tasks: {live:?}"
    );
}

#[test]
fn a_failing_rollback_pauses_instead_of_rolling_back_again() {
    let (mut s, mut index, mut new_id) = updating(UpdateConfig::default());
    // Finish the update.
    for t in 0..20 {
        let now = at(t);
        step_at(&mut s, &mut index, &mut new_id, &now);
        run_all_at(&mut s, &mut index, &now);
    }
    assert_eq!(update_state(&s).0, "completed");
    // Roll back by hand, with a rollback config that would roll back on failure.
    index += 1;
    s.apply(
        index,
        Command::RollbackService {
            id: "web".into(),
            now: at(30),
        },
    )
    .unwrap();
    assert_eq!(
        update_state(&s),
        (
            "rollback_started".to_string(),
            "manually requested rollback".to_string()
        )
    );
    let v = s.services["web"].spec_version;
    let mut failed = None;
    for t in 0..6 {
        let now = at(30 + t);
        step_at(&mut s, &mut index, &mut new_id, &now);
        run_all_at(&mut s, &mut index, &now);
        if let Some(t) = s
            .service_tasks("web")
            .find(|t| t.spec_version == v && t.status.state == TaskState::Running)
        {
            failed = Some(t.id.clone());
            break;
        }
    }
    let failed = failed.expect("a rolled-back task runs");
    end_task(&mut s, &mut index, &failed, TaskState::Failed, &at(37));
    step_at(&mut s, &mut index, &mut new_id, &at(38));
    let (state, message) = update_state(&s);
    assert_eq!(state, "rollback_paused");
    assert!(
        message.starts_with(&format!(
            "rollback paused due to failure or early termination of task {failed}"
        )),
        "{message}"
    );
}

#[test]
fn manual_rollback_swaps_spec_and_previous_spec() {
    let (mut s, mut index, mut new_id) = updating(UpdateConfig::default());
    for t in 0..20 {
        let now = at(t);
        step_at(&mut s, &mut index, &mut new_id, &now);
        run_all_at(&mut s, &mut index, &now);
    }
    let v2 = s.services["web"].spec.clone();
    let v1 = s.services["web"].previous_spec.clone().unwrap();
    index += 1;
    s.apply(
        index,
        Command::RollbackService {
            id: "web".into(),
            now: at(30),
        },
    )
    .unwrap();
    assert_eq!(s.services["web"].spec, v1);
    assert_eq!(s.services["web"].previous_spec.as_ref(), Some(&v2));
    for t in 0..30 {
        let now = at(31 + t);
        step_at(&mut s, &mut index, &mut new_id, &now);
        run_all_at(&mut s, &mut index, &now);
    }
    assert_eq!(
        update_state(&s),
        (
            "rollback_completed".to_string(),
            "rollback completed".to_string()
        )
    );
    assert_eq!(args_of_live(&s), vec![Vec::<String>::new(); 3]);
    // And a second rollback goes forward again, as Docker's does.
    index += 1;
    s.apply(
        index,
        Command::RollbackService {
            id: "web".into(),
            now: at(70),
        },
    )
    .unwrap();
    assert_eq!(s.services["web"].spec, v2);
}

#[test]
fn rollback_without_a_previous_spec_is_refused_and_changes_nothing() {
    let mut s = cluster((30000, 32767));
    s.apply(
        2,
        Command::CreateService {
            id: "web".into(),
            spec: service_spec("web", 1, &[], &[]),
            now: NOW.into(),
        },
    )
    .unwrap();
    let before = s.clone();
    let e = s
        .apply(
            3,
            Command::RollbackService {
                id: "web".into(),
                now: NOW.into(),
            },
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "service web has no previous spec to roll back to"
    );
    assert_eq!(s, before);
}
