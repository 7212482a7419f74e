//! Rollouts and placement on a real cluster (1 manager + 2 workers on loopback, native
//! tasks): every node reports its CPUs and memory, a reservation no node can hold leaves a
//! task pending with Docker's reason, and an update whose tasks exit at once rolls itself
//! back to the previous spec (`failure_action: rollback`).

use shoal_api::control::{ControlRequest as C, ControlResponse as R, ServiceView, TaskView};
use shoal_api::local::{LocalRequest, LocalResponse, SwarmInit, SwarmJoin};
use shoal_api::objects::*;
use shoal_integration::{LocalCluster, eventually};
use std::collections::BTreeMap;
use std::time::Duration;

const FIRST_IP: u8 = 201;

fn native(name: &str, replicas: u64, command: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        task_template: TaskSpec {
            container_spec: ContainerSpec {
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            runtime: Runtime::Native,
            ..Default::default()
        },
        mode: ServiceMode::Replicated { replicas },
        update_config: UpdateConfig::default(),
        rollback_config: None,
        endpoint_spec: EndpointSpec::default(),
    }
}

async fn service(c: &LocalCluster, name: &str) -> ServiceView {
    match c
        .control(
            0,
            C::ServiceInspect {
                service: name.into(),
            },
        )
        .await
        .unwrap()
    {
        R::Service(s) => *s,
        other => panic!("{other:?}"),
    }
}

async fn tasks(c: &LocalCluster, name: &str) -> Vec<TaskView> {
    match c
        .control(
            0,
            C::TaskList {
                service: Some(name.into()),
                node: None,
            },
        )
        .await
        .unwrap()
    {
        R::Tasks(t) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_pending_reason_and_automatic_rollback() {
    let c = LocalCluster::start(3, FIRST_IP).expect("start daemons");
    let ips: Vec<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();
    let LocalResponse::Joined { .. } = c
        .local(
            0,
            LocalRequest::SwarmInit(SwarmInit {
                advertise_addr: ips[0].clone(),
                listen_addr: format!("{}:2377", ips[0]),
                default_addr_pool: vec!["198.19.0.0/16".into()],
                subnet_size: 24,
                data_path_port: 4789,
                dynamic_port_range: None,
                autolock: false,
            }),
        )
        .await
        .expect("init")
    else {
        panic!()
    };
    let R::Token(token) = c
        .control(
            0,
            C::JoinToken {
                role: NodeRole::Worker,
                rotate: false,
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    for (i, ip) in ips.iter().enumerate().skip(1) {
        c.local(
            i,
            LocalRequest::SwarmJoin(SwarmJoin {
                token: token.clone(),
                remote_addr: c.nodes[0].grpc_addr(),
                advertise_addr: ip.clone(),
                listen_addr: format!("{ip}:2377"),
            }),
        )
        .await
        .expect("join");
    }

    // Every node is ready and reports this machine's CPUs and memory.
    let nodes = eventually(Duration::from_secs(30), "3 ready nodes", || async {
        match c.control(0, C::NodeList).await.ok()? {
            R::Nodes(n)
                if n.len() == 3
                    && n.iter().all(|n| {
                        n.status.state == NodeState::Ready && n.description.resources.nano_cpus > 0
                    }) =>
            {
                Some(n)
            }
            _ => None,
        }
    })
    .await
    .unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    for n in &nodes {
        let r = &n.description.resources;
        assert_eq!(r.nano_cpus, cpus * 1_000_000_000, "{}", n.hostname());
        assert!(r.memory_bytes > 64 << 20, "{}: {r:?}", n.hostname());
    }
    let json = serde_json::to_value(&nodes[0]).unwrap();
    assert!(
        json["Description"]["Resources"]["NanoCPUs"].is_i64()
            && json["Description"]["Resources"]["MemoryBytes"].is_i64(),
        "Docker's field names in node inspect: {json}"
    );

    // A reservation above every node's memory can never be met: refused at create, with
    // nothing made.
    let most = nodes
        .iter()
        .map(|n| n.description.resources.memory_bytes)
        .max()
        .unwrap();
    let mut huge = native("huge", 1, &["sleep", "600"]);
    huge.task_template.resources.reservations.memory_bytes = most + (1 << 30);
    let e = c
        .control(
            0,
            C::ServiceCreate {
                spec: huge,
                registry_auth: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.message()
            .starts_with("service huge: it reserves 0 CPUs and ")
            && e.message().contains("more than any of the 3 nodes has"),
        "{}",
        e.message()
    );
    assert!(
        c.control(
            0,
            C::ServiceInspect {
                service: "huge".into()
            }
        )
        .await
        .is_err(),
        "nothing made"
    );
    // One that fits a node, but not beside what the nodes already hold, stays pending,
    // saying why: three tasks take 60% of each node's memory, a fourth finds no room.
    let share = most / 10 * 6;
    let mut fill = native("fill", 3, &["sleep", "600"]);
    fill.task_template.resources.reservations.memory_bytes = share;
    fill.task_template.placement.max_replicas = 1;
    c.control(
        0,
        C::ServiceCreate {
            spec: fill,
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let mut big = native("big", 1, &["sleep", "600"]);
    big.task_template.resources.reservations.memory_bytes = share;
    c.control(
        0,
        C::ServiceCreate {
            spec: big,
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let reason = eventually(Duration::from_secs(20), "a pending reason", || async {
        let t = tasks(&c, "big").await;
        let t = t.first()?;
        (t.task.status.state == TaskState::Pending && !t.task.status.err.is_empty())
            .then(|| t.task.status.err.clone())
    })
    .await
    .unwrap();
    assert_eq!(
        reason,
        "no suitable node (insufficient resources on 3 nodes)"
    );
    c.control(
        0,
        C::ServiceRemove {
            service: "fill".into(),
        },
    )
    .await
    .unwrap();
    // No previous spec: a rollback is refused by name and changes nothing.
    let e = c
        .control(
            0,
            C::ServiceRollback {
                service: "big".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "service big has no previous spec to roll back to"
    );

    // A running service, then an update whose tasks exit at once.
    let mut web = native("web", 2, &["sleep", "600"]);
    web.update_config = UpdateConfig {
        parallelism: 1,
        failure_action: FailureAction::Rollback,
        monitor: 5_000_000_000,
        ..Default::default()
    };
    c.control(
        0,
        C::ServiceCreate {
            spec: web.clone(),
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "2 running web tasks", || async {
        let t = tasks(&c, "web").await;
        (t.iter()
            .filter(|t| t.task.status.state == TaskState::Running)
            .count()
            == 2)
            .then_some(())
    })
    .await
    .unwrap();
    let before = service(&c, "web").await;
    let mut broken = web.clone();
    broken.task_template.container_spec.command = vec!["sh".into(), "-c".into(), "exit 3".into()];
    c.control(
        0,
        C::ServiceUpdate {
            service: "web".into(),
            version: before.service.version.index,
            spec: broken,
            registry_auth: None,
        },
    )
    .await
    .unwrap();

    // It rolls itself back: rollback_started, then rollback_completed.
    let seen = std::sync::Mutex::new(Vec::<(String, String)>::new());
    let done = eventually(Duration::from_secs(60), "rollback_completed", || async {
        let s = service(&c, "web").await;
        let u = s.service.update_status.clone()?;
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&(u.state.clone(), u.message.clone())) {
            seen.push((u.state.clone(), u.message.clone()));
        }
        (u.state == "rollback_completed").then_some(s)
    })
    .await;
    let seen = seen.into_inner().unwrap();
    let done = done.unwrap_or_else(|e| panic!("{e}: states seen {seen:?}\n{}", c.log(0)));
    let started = seen
        .iter()
        .find(|(s, _)| s == "rollback_started")
        .unwrap_or_else(|| panic!("rollback_started not seen: {seen:?}"));
    assert!(
        started
            .1
            .starts_with("update rolled back due to failure or early termination of task "),
        "{started:?}"
    );
    let u = done.service.update_status.as_ref().unwrap();
    assert_eq!(u.message, "rollback completed");
    assert!(!u.completed_at.is_empty());
    assert_eq!(done.service.spec, web, "back on the previous spec");
    assert!(done.service.previous_spec.is_none());

    // Both slots run the old command again.
    eventually(
        Duration::from_secs(30),
        "2 running old-spec tasks",
        || async {
            let t = tasks(&c, "web").await;
            let running: Vec<&TaskView> = t
                .iter()
                .filter(|t| {
                    t.task.status.state == TaskState::Running
                        && t.task.desired_state == TaskState::Running
                })
                .collect();
            (running.len() == 2
                && running
                    .iter()
                    .all(|t| t.task.spec.container_spec.command == ["sleep", "600"]))
            .then_some(())
        },
    )
    .await
    .unwrap();

    // The CLI: after the automatic rollback there is nothing to roll back to; after a
    // good update, `service rollback` (and `service update --rollback`) bring the
    // previous spec back.
    let o = c.shoal(0, &["service", "rollback", "web"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Error: service web has no previous spec to roll back to"
    );
    let o = c.shoal(0, &["service", "update", "--args", "sleep 601", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.shoal(
        0,
        &["service", "update", "--rollback", "--replicas", "3", "web"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--rollback cannot be combined"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = c.shoal(0, &["service", "rollback", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = service(&c, "web").await;
    assert_eq!(
        back.service.spec.task_template.container_spec.command,
        ["sleep", "600"]
    );
    let o = c.shoal(0, &["service", "update", "--rollback", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = service(&c, "web").await;
    assert_eq!(
        again.service.spec.task_template.container_spec.command,
        ["sleep", "601"],
        "a second rollback swaps back, as Docker's does"
    );
}
