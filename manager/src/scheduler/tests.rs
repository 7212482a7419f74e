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
                TaskOp::Status { status, .. } => Some(status.message.clone()),
                _ => None,
            });
            assert_eq!(
                msg.as_deref(),
                Some("no suitable node (1 nodes: 1 not ready)"),
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
    assert_eq!(check_node(&state, &plain, &image), Err(Reject::NoDocker));
    assert_eq!(check_node(&state, &docker, &image), Ok(()));
    assert_eq!(check_node(&state, &plain, &native), Ok(()));
    state.nodes.remove("n2");
    state.services.insert("img".into(), image);
    let mut t = task("t1", "img", "", TaskState::Pending);
    t.spec = state.services["img"].spec.task_template.clone();
    state.tasks.insert("t1".into(), t);
    let ops = schedule(&state);
    assert!(assigned(&ops).is_empty());
    let msg = format!("{ops:?}");
    assert!(msg.contains("1 without Docker"), "{msg}");
}
