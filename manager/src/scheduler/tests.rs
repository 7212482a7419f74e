//! Table-driven placement decisions.

use super::*;
use crate::store::ClusterState;
use std::collections::BTreeMap;

fn node(
    id: &str,
    state: NodeState,
    availability: Availability,
    role: NodeRole,
    labels: &[(&str, &str)],
) -> Node {
    Node {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        spec: NodeSpec {
            name: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            role,
            availability,
        },
        description: NodeDescription {
            hostname: format!("host-{id}"),
            executor: "docker".into(),
            dataplane: "nftables".into(),
            ..Default::default()
        },
        status: NodeStatus {
            state,
            message: String::new(),
            addr: String::new(),
        },
        manager_status: None,
        raft_id: 0,
        ingress_addr: String::new(),
    }
}

fn service(id: &str, constraints: &[&str], host_port: Option<u16>) -> Service {
    Service {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        spec: ServiceSpec {
            name: id.into(),
            labels: BTreeMap::new(),
            task_template: TaskSpec {
                placement: Placement {
                    constraints: constraints.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                },
                ..Default::default()
            },
            mode: ServiceMode::Replicated { replicas: 1 },
            update_config: UpdateConfig::default(),
            rollback_config: None,
            endpoint_spec: EndpointSpec::default(),
        },
        previous_spec: None,
        endpoint: Endpoint {
            ports: host_port
                .map(|p| {
                    vec![PortConfig {
                        name: String::new(),
                        protocol: Protocol::Tcp,
                        target_port: 80,
                        published_port: p,
                        publish_mode: PublishMode::Host,
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        },
        update_status: None,
        spec_version: Version::default(),
    }
}

fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: service.into(),
        slot: 1,
        node_id: node.into(),
        spec: TaskSpec::default(),
        spec_version: Version::default(),
        status: TaskStatus {
            state,
            ..Default::default()
        },
        desired_state: TaskState::Running,
        networks_attachments: vec![],
        restart_count: 0,
    }
}

fn assigned(ops: &[TaskOp]) -> Vec<(String, String)> {
    ops.iter()
        .filter_map(|op| match op {
            TaskOp::Assign { id, node_id } => Some((id.clone(), node_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn placement_table() {
    use Availability::*;
    use NodeRole::*;
    use NodeState::*;
    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        constraints: Vec<&'static str>,
        existing: Vec<(&'static str, &'static str)>, // (task id, node) running tasks of svc
        expect: Option<&'static str>,
    }
    let cases = vec![
        Case {
            name: "spread to the emptier node",
            nodes: vec![
                node("a", Ready, Active, Worker, &[]),
                node("b", Ready, Active, Worker, &[]),
            ],
            constraints: vec![],
            existing: vec![("x", "a")],
            expect: Some("b"),
        },
        Case {
            name: "skip down nodes",
            nodes: vec![
                node("a", Down, Active, Worker, &[]),
                node("b", Ready, Active, Worker, &[]),
            ],
            constraints: vec![],
            existing: vec![("x", "b")],
            expect: Some("b"),
        },
        Case {
            name: "skip drained and paused",
            nodes: vec![
                node("a", Ready, Drain, Worker, &[]),
                node("b", Ready, Pause, Worker, &[]),
                node("c", Ready, Active, Worker, &[]),
            ],
            constraints: vec![],
            existing: vec![],
            expect: Some("c"),
        },
        Case {
            name: "role constraint",
            nodes: vec![
                node("a", Ready, Active, Worker, &[]),
                node("b", Ready, Active, Manager, &[]),
            ],
            constraints: vec!["node.role==manager"],
            existing: vec![("x", "b")],
            expect: Some("b"),
        },
        Case {
            name: "label constraint",
            nodes: vec![
                node("a", Ready, Active, Worker, &[("zone", "east")]),
                node("b", Ready, Active, Worker, &[("zone", "west")]),
            ],
            constraints: vec!["node.labels.zone!=east"],
            existing: vec![],
            expect: Some("b"),
        },
        Case {
            name: "hostname constraint",
            nodes: vec![
                node("a", Ready, Active, Worker, &[]),
                node("b", Ready, Active, Worker, &[]),
            ],
            constraints: vec!["node.hostname==host-a"],
            existing: vec![],
            expect: Some("a"),
        },
        Case {
            name: "nothing fits",
            nodes: vec![node("a", Down, Active, Worker, &[])],
            constraints: vec![],
            existing: vec![],
            expect: None,
        },
    ];
    for case in cases {
        let mut state = ClusterState::default();
        for n in case.nodes {
            state.nodes.insert(n.id.clone(), n);
        }
        state
            .services
            .insert("s".into(), service("s", &case.constraints, None));
        for (id, n) in &case.existing {
            state
                .tasks
                .insert(id.to_string(), task(id, "s", n, TaskState::Running));
        }
        state
            .tasks
            .insert("new".into(), task("new", "s", "", TaskState::Pending));
        let ops = schedule(&state);
        let got = assigned(&ops)
            .into_iter()
            .find(|(id, _)| id == "new")
            .map(|(_, n)| n);
        assert_eq!(got.as_deref(), case.expect, "case: {}", case.name);
        if case.expect.is_none() {
            let msg = ops.iter().find_map(|op| match op {
                TaskOp::Status { status, .. } => Some(status.err.clone()),
                _ => None,
            });
            assert_eq!(
                msg.as_deref(),
                Some("no suitable node (1 node not available for new tasks)"),
                "case: {}",
                case.name
            );
        }
    }
}

#[test]
fn host_mode_port_at_most_once_per_node() {
    let mut state = ClusterState::default();
    for id in ["a", "b"] {
        state.nodes.insert(
            id.into(),
            node(
                id,
                NodeState::Ready,
                Availability::Active,
                NodeRole::Worker,
                &[],
            ),
        );
    }
    state
        .services
        .insert("s".into(), service("s", &[], Some(8080)));
    for id in ["t1", "t2", "t3"] {
        state
            .tasks
            .insert(id.into(), task(id, "s", "", TaskState::Pending));
    }
    let placed = assigned(&schedule(&state));
    assert_eq!(
        placed.len(),
        2,
        "two nodes, two tasks with host port 8080: {placed:?}"
    );
    assert_ne!(placed[0].1, placed[1].1);
}

#[test]
fn constraint_syntax_errors_are_clear() {
    assert!(Constraint::parse("node.role=manager").is_err());
    let e = Constraint::parse("node.colour==red").unwrap_err();
    assert!(e.to_string().contains("unknown attribute"));
}

#[test]
fn two_services_never_share_a_host_port_on_a_node_in_one_pass() {
    use crate::store::Command;
    use crate::store::tests::{cluster, service_spec};
    let mut s = cluster((30000, 32767));
    let mk = |name: &str| {
        let mut spec = service_spec(name, 1, &[(8080, 80)], &[]);
        spec.endpoint_spec.ports[0].publish_mode = PublishMode::Host;
        spec.endpoint_spec.mode = EndpointMode::Dnsrr;
        spec
    };
    s.apply(
        2,
        Command::CreateService {
            id: "a".into(),
            spec: mk("a"),
            now: "2026-11-25T12:00:00Z".into(),
        },
    )
    .unwrap();
    s.apply(
        3,
        Command::CreateService {
            id: "b".into(),
            spec: mk("b"),
            now: "2026-11-25T12:00:00Z".into(),
        },
    )
    .unwrap();
    let ops = crate::orchestrator::reconcile(&s, 0, &mut {
        let mut n = 0;
        move || {
            n += 1;
            format!("t{n}")
        }
    });
    s.apply(
        4,
        Command::Tasks {
            ops,
            now: "2026-11-25T12:00:00Z".into(),
        },
    )
    .unwrap();
    let ops = schedule(&s);
    let assigns = ops
        .iter()
        .filter(|o| matches!(o, TaskOp::Assign { .. }))
        .count();
    assert!(
        assigns <= 1,
        "both host-port 8080 tasks placed on the only node: {ops:?}"
    );
}

#[test]
fn container_tasks_go_only_to_nodes_with_docker_and_native_ones_anywhere() {
    let mut state = ClusterState::default();
    let mut plain = node(
        "n1",
        NodeState::Ready,
        Availability::Active,
        NodeRole::Worker,
        &[],
    );
    plain.description.executor = "native".into();
    let docker = node(
        "n2",
        NodeState::Ready,
        Availability::Active,
        NodeRole::Worker,
        &[],
    );
    state.nodes.insert("n1".into(), plain.clone());
    state.nodes.insert("n2".into(), docker.clone());
    let image = service("img", &[], None);
    let mut native = service("cmd", &[], None);
    native.spec.task_template.runtime = Runtime::Native;
    let usage = Usage::of(&state);
    assert_eq!(check_node(&usage, &plain, &image), Err(Reject::NoDocker));
    assert_eq!(check_node(&usage, &docker, &image), Ok(()));
    assert_eq!(check_node(&usage, &plain, &native), Ok(()));
    state.nodes.remove("n2");
    state.services.insert("img".into(), image);
    let mut t = task("t1", "img", "", TaskState::Pending);
    t.spec = state.services["img"].spec.task_template.clone();
    state.tasks.insert("t1".into(), t);
    let ops = schedule(&state);
    assert!(assigned(&ops).is_empty());
    let msg = format!("{ops:?}");
    assert!(msg.contains("no Docker engine on 1 node"), "{msg}");
}

const GIB: i64 = 1 << 30;
const CPU: i64 = 1_000_000_000;

/// A ready worker offering `cpus` and `gib` of memory.
fn sized(id: &str, cpus: i64, gib: i64, labels: &[(&str, &str)]) -> Node {
    let mut n = node(
        id,
        NodeState::Ready,
        Availability::Active,
        NodeRole::Worker,
        labels,
    );
    n.description.resources = Resources {
        nano_cpus: cpus * CPU,
        memory_bytes: gib * GIB,
    };
    n
}

/// Schedules `pending` new tasks of `svc` (one pass) and returns how many went to each
/// node plus the pending reasons of those left.
fn place(
    nodes: Vec<Node>,
    svc: Service,
    existing: &[(&str, &str, TaskState)],
    pending: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut state = ClusterState::default();
    for n in nodes {
        state.nodes.insert(n.id.clone(), n);
    }
    for (id, n, st) in existing {
        let mut t = task(id, &svc.id, n, *st);
        t.spec = svc.spec.task_template.clone();
        state.tasks.insert(id.to_string(), t);
    }
    for i in 0..pending {
        let id = format!("new{i:02}");
        let mut t = task(&id, &svc.id, "", TaskState::Pending);
        t.spec = svc.spec.task_template.clone();
        state.tasks.insert(id, t);
    }
    state.services.insert(svc.id.clone(), svc);
    let ops = schedule(&state);
    let mut per_node = BTreeMap::new();
    for (_, n) in assigned(&ops) {
        *per_node.entry(n).or_default() += 1;
    }
    let reasons = ops
        .iter()
        .filter_map(|op| match op {
            TaskOp::Status { status, .. } => Some(status.err.clone()),
            _ => None,
        })
        .collect();
    (per_node, reasons)
}

fn reserving(cpus: i64, gib: i64) -> Service {
    let mut s = service("s", &[], None);
    s.spec.task_template.resources.reservations = Reservations {
        nano_cpus: cpus * CPU / 2,
        memory_bytes: gib * GIB,
    };
    s
}

#[test]
fn reservations_and_limits_per_node_table() {
    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        service: Service,
        existing: Vec<(&'static str, &'static str, TaskState)>,
        pending: usize,
        expect: &'static [(&'static str, usize)],
        reason: Option<&'static str>,
    }
    let with_max = |max: u64| {
        let mut s = service("s", &[], None);
        s.spec.task_template.placement.max_replicas = max;
        s
    };
    let cases = vec![
        Case {
            name: "half-CPU reservations fill two 2-CPU nodes with four tasks each",
            nodes: vec![sized("a", 2, 8, &[]), sized("b", 2, 8, &[])],
            service: reserving(1, 0),
            existing: vec![],
            pending: 9,
            expect: &[("a", 4), ("b", 4)],
            reason: Some("no suitable node (insufficient resources on 2 nodes)"),
        },
        Case {
            name: "memory runs out first",
            nodes: vec![sized("a", 8, 2, &[]), sized("b", 8, 1, &[])],
            service: reserving(0, 1),
            existing: vec![],
            pending: 4,
            expect: &[("a", 2), ("b", 1)],
            reason: Some("no suitable node (insufficient resources on 2 nodes)"),
        },
        Case {
            name: "running and stopping tasks hold their reservations; ended ones don't",
            nodes: vec![sized("a", 1, 8, &[]), sized("b", 1, 8, &[])],
            service: reserving(1, 0),
            existing: vec![
                ("r", "a", TaskState::Running),
                ("x", "b", TaskState::Failed),
            ],
            pending: 3,
            // a: 1 running half-CPU task, room for 1 more; b: free, room for 2.
            expect: &[("a", 1), ("b", 2)],
            reason: None,
        },
        Case {
            name: "a node that reports no resources takes no task with reservations",
            nodes: vec![sized("a", 0, 0, &[]), sized("b", 4, 4, &[])],
            service: reserving(1, 1),
            existing: vec![],
            pending: 2,
            expect: &[("b", 2)],
            reason: None,
        },
        Case {
            name: "without reservations resources don't matter",
            nodes: vec![sized("a", 0, 0, &[])],
            service: service("s", &[], None),
            existing: vec![],
            pending: 3,
            expect: &[("a", 3)],
            reason: None,
        },
        Case {
            name: "max replicas per node",
            nodes: vec![sized("a", 1, 1, &[]), sized("b", 1, 1, &[])],
            service: with_max(2),
            existing: vec![("r", "a", TaskState::Running)],
            pending: 4,
            expect: &[("a", 1), ("b", 2)],
            reason: Some("no suitable node (max replicas per node limit exceed)"),
        },
        Case {
            name: "reasons are counted per check, most nodes first",
            nodes: vec![
                sized("a", 1, 1, &[]),
                sized("b", 1, 1, &[("zone", "east")]),
                sized("c", 1, 1, &[("zone", "east")]),
                node(
                    "d",
                    NodeState::Down,
                    Availability::Active,
                    NodeRole::Worker,
                    &[],
                ),
            ],
            service: {
                let mut s = reserving(4, 0);
                s.spec.task_template.placement.constraints = vec!["node.labels.zone==east".into()];
                s
            },
            existing: vec![],
            pending: 1,
            expect: &[],
            reason: Some(
                "no suitable node (insufficient resources on 3 nodes; 1 node not available for new tasks)",
            ),
        },
        Case {
            name: "constraints then resources, in swarmkit's filter order",
            nodes: vec![
                sized("a", 1, 1, &[]),
                sized("b", 1, 1, &[]),
                sized("c", 4, 4, &[("zone", "east")]),
            ],
            service: {
                let mut s = reserving(8, 0);
                s.spec.task_template.placement.constraints = vec!["node.labels.zone==east".into()];
                s
            },
            existing: vec![("r", "c", TaskState::Running)],
            pending: 1,
            expect: &[],
            reason: Some("no suitable node (insufficient resources on 3 nodes)"),
        },
    ];
    for case in cases {
        let (got, reasons) = place(case.nodes, case.service, &case.existing, case.pending);
        let want: BTreeMap<String, usize> = case
            .expect
            .iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect();
        assert_eq!(got, want, "case: {}", case.name);
        match case.reason {
            Some(r) => {
                assert!(!reasons.is_empty(), "case: {}: no pending task", case.name);
                assert!(
                    reasons.iter().all(|x| x == r),
                    "case: {}: {reasons:?}",
                    case.name
                );
            }
            None => assert!(reasons.is_empty(), "case: {}: {reasons:?}", case.name),
        }
    }
}

#[test]
fn pending_reason_is_in_err_and_not_rewritten_when_unchanged() {
    let mut state = ClusterState::default();
    state.nodes.insert("a".into(), sized("a", 1, 1, &[]));
    let svc = reserving(4, 0);
    state.services.insert("s".into(), svc.clone());
    let mut t = task("t", "s", "", TaskState::Pending);
    t.spec = svc.spec.task_template.clone();
    state.tasks.insert("t".into(), t);
    let ops = schedule(&state);
    let TaskOp::Status { status, .. } = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!(status.message, "pending task scheduling");
    assert_eq!(
        status.err,
        "no suitable node (insufficient resources on 1 node)"
    );
    state.tasks.get_mut("t").unwrap().status = status.clone();
    assert!(schedule(&state).is_empty(), "same reason, no new op");
}

#[test]
fn spread_over_a_label_table() {
    let spread = |descriptors: &[&str]| {
        let mut s = service("s", &[], None);
        s.spec.task_template.placement.preferences = descriptors
            .iter()
            .map(|d| PlacementPreference {
                spread: SpreadOver {
                    spread_descriptor: d.to_string(),
                },
            })
            .collect();
        s
    };
    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        prefs: &'static [&'static str],
        existing: Vec<(&'static str, &'static str, TaskState)>,
        pending: usize,
        expect: &'static [(&'static str, usize)],
    }
    let cases = vec![
        Case {
            name: "even over zones, not over nodes: one west node takes half",
            nodes: vec![
                sized("a", 1, 1, &[("zone", "east")]),
                sized("b", 1, 1, &[("zone", "east")]),
                sized("c", 1, 1, &[("zone", "east")]),
                sized("d", 1, 1, &[("zone", "west")]),
            ],
            prefs: &["node.labels.zone"],
            existing: vec![],
            pending: 6,
            expect: &[("a", 1), ("b", 1), ("c", 1), ("d", 3)],
        },
        Case {
            name: "nodes without the label are a group of their own",
            nodes: vec![
                sized("a", 1, 1, &[("zone", "east")]),
                sized("b", 1, 1, &[("zone", "east")]),
                sized("c", 1, 1, &[]),
            ],
            prefs: &["node.labels.zone"],
            existing: vec![],
            pending: 4,
            expect: &[("a", 1), ("b", 1), ("c", 2)],
        },
        Case {
            name: "existing tasks count: the emptier zone fills first",
            nodes: vec![
                sized("a", 1, 1, &[("zone", "east")]),
                sized("b", 1, 1, &[("zone", "west")]),
            ],
            prefs: &["node.labels.zone"],
            existing: vec![
                ("r1", "a", TaskState::Running),
                ("r2", "a", TaskState::Running),
            ],
            pending: 3,
            // b catches up with a, then they take turns.
            expect: &[("a", 1), ("b", 2)],
        },
        Case {
            name: "two levels: zone, then rack within the zone",
            nodes: vec![
                sized("a", 1, 1, &[("zone", "east"), ("rack", "1")]),
                sized("b", 1, 1, &[("zone", "east"), ("rack", "1")]),
                sized("c", 1, 1, &[("zone", "east"), ("rack", "2")]),
                sized("d", 1, 1, &[("zone", "west"), ("rack", "1")]),
            ],
            prefs: &["node.labels.zone", "node.labels.rack"],
            existing: vec![],
            pending: 4,
            // east gets 2: one per rack (rack 1 shared by a and b); west gets 2 on d.
            expect: &[("a", 1), ("c", 1), ("d", 2)],
        },
        Case {
            name: "without preferences, spread by node",
            nodes: vec![
                sized("a", 1, 1, &[("zone", "east")]),
                sized("b", 1, 1, &[("zone", "east")]),
                sized("c", 1, 1, &[("zone", "west")]),
            ],
            prefs: &[],
            existing: vec![],
            pending: 3,
            expect: &[("a", 1), ("b", 1), ("c", 1)],
        },
    ];
    for case in cases {
        let (got, reasons) = place(case.nodes, spread(case.prefs), &case.existing, case.pending);
        let want: BTreeMap<String, usize> = case
            .expect
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| (n.to_string(), *c))
            .collect();
        assert_eq!(got, want, "case: {}", case.name);
        assert!(reasons.is_empty(), "case: {}", case.name);
    }
}
