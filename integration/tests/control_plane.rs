//! Multi-process control plane on loopback: 3 managers + 2 workers, services with
//! published ports, leader SIGKILL, restarts, and refused joins.

use shoal_api::control::{ControlRequest as C, ControlResponse as R};
use shoal_api::local::{LocalRequest, LocalResponse, SwarmInit, SwarmJoin};
use shoal_api::objects::*;
use shoal_integration::{LocalCluster, eventually};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn init_req(ip: &str) -> LocalRequest {
    LocalRequest::SwarmInit(SwarmInit {
        advertise_addr: ip.into(),
        listen_addr: format!("{ip}:2377"),
        default_addr_pool: vec!["198.19.0.0/16".into()],
        subnet_size: 24,
        data_path_port: 4789,
        dynamic_port_range: None,
        autolock: false,
    })
}

fn join_req(token: &str, manager: &str, ip: &str) -> LocalRequest {
    LocalRequest::SwarmJoin(SwarmJoin {
        token: token.into(),
        remote_addr: manager.into(),
        advertise_addr: ip.into(),
        listen_addr: format!("{ip}:2377"),
    })
}

fn spec(name: &str, replicas: u64, published: u16) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        task_template: TaskSpec {
            container_spec: ContainerSpec {
                command: vec!["sleep".into(), "600".into()],
                ..Default::default()
            },
            runtime: Runtime::Native,
            ..Default::default()
        },
        mode: ServiceMode::Replicated { replicas },
        update_config: UpdateConfig::default(),
        rollback_config: None,
        endpoint_spec: EndpointSpec {
            mode: EndpointMode::Vip,
            ports: vec![PortConfig {
                name: String::new(),
                protocol: Protocol::Tcp,
                target_port: 80,
                published_port: published,
                publish_mode: PublishMode::Ingress,
            }],
            session_affinity: Default::default(),
        },
    }
}

/// Calls a manager's Control service directly with node `i`'s own certificate.
async fn worker_grpc_call(
    c: &LocalCluster,
    i: usize,
    manager: &str,
    req: &C,
) -> Result<R, tonic::Status> {
    let dir = c.nodes[i].dir.join("state/certificates");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let tls = shoal_manager::ca::tls::client_tls(
        &read("swarm-root-ca.crt"),
        &read("swarm-node.crt"),
        &read("swarm-node.key"),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{manager}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = shoal_api::pb::control_client::ControlClient::new(channel);
    let reply = client.call(shoal_api::wire::frame(req)).await?;
    shoal_api::wire::unframe(reply.get_ref())
}

async fn token(c: &LocalCluster, i: usize, role: NodeRole) -> String {
    match c
        .control(
            i,
            C::JoinToken {
                role,
                rotate: false,
            },
        )
        .await
        .unwrap()
    {
        R::Token(t) => t,
        other => panic!("{other:?}"),
    }
}

async fn nodes(c: &LocalCluster, i: usize) -> Option<Vec<Node>> {
    match c.control(i, C::NodeList).await.ok()? {
        R::Nodes(n) => Some(n),
        _ => None,
    }
}

/// No VIP, task address or published port appears twice.
fn assert_unique(
    services: &[shoal_api::control::ServiceView],
    tasks: &[shoal_api::control::TaskView],
) {
    let mut addrs = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in services {
        for v in &s.service.endpoint.virtual_ips {
            assert!(addrs.insert(v.addr.clone()), "VIP {} twice", v.addr);
        }
        for p in &s.service.endpoint.ports {
            assert!(
                ports.insert((p.protocol, p.published_port)),
                "port {} twice",
                p.published_port
            );
        }
    }
    for t in tasks.iter().filter(|t| !t.task.status.state.is_terminal()) {
        for a in &t.task.networks_attachments {
            for addr in &a.addresses {
                assert!(addrs.insert(addr.clone()), "address {addr} twice");
            }
        }
    }
}

async fn services_and_tasks(
    c: &LocalCluster,
    i: usize,
) -> (
    Vec<shoal_api::control::ServiceView>,
    Vec<shoal_api::control::TaskView>,
) {
    let R::Services(s) = c.control(i, C::ServiceList).await.unwrap() else {
        panic!()
    };
    let R::Tasks(t) = c
        .control(
            i,
            C::TaskList {
                service: None,
                node: None,
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    (s, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_two_workers_survive_leader_loss_and_restarts() {
    let mut c = LocalCluster::start(5, 21).expect("start daemons");
    let ips: Vec<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();
    let m1 = c.nodes[0].grpc_addr();

    let LocalResponse::Joined { .. } = c.local(0, init_req(&ips[0])).await.expect("init") else {
        panic!()
    };
    let manager_token = token(&c, 0, NodeRole::Manager).await;
    let worker_token = token(&c, 0, NodeRole::Worker).await;

    // Refused joins first: nothing about them may stay behind.
    let wrong_secret = format!(
        "{}-{}",
        &worker_token[..worker_token.len() - 26],
        "0".repeat(25)
    );
    let e = c
        .local(3, join_req(&wrong_secret, &m1, &ips[3]))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("invalid join token"),
        "{}",
        e.message()
    );
    let wrong_ca = format!(
        "SWMTKN-1-{}-{}",
        "1".repeat(50),
        &worker_token[worker_token.len() - 25..]
    );
    let e = c
        .local(3, join_req(&wrong_ca, &m1, &ips[3]))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("does not match the join token"),
        "{}",
        e.message()
    );
    // A rotated-out token.
    let R::Token(rotated) = c
        .control(
            0,
            C::JoinToken {
                role: NodeRole::Worker,
                rotate: true,
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(rotated, worker_token);
    let e = c
        .local(3, join_req(&worker_token, &m1, &ips[3]))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("invalid join token"),
        "{}",
        e.message()
    );
    let worker_token = rotated;

    for (i, ip) in ips.iter().enumerate().take(3).skip(1) {
        if let Err(e) = c.local(i, join_req(&manager_token, &m1, ip)).await {
            panic!("manager join: {}\n{}", e.message(), c.log(0));
        }
    }
    for (i, ip) in ips.iter().enumerate().skip(3) {
        c.local(i, join_req(&worker_token, &m1, ip))
            .await
            .expect("worker join");
    }
    let listed = eventually(
        Duration::from_secs(20),
        "5 ready nodes with one leader",
        || async {
            let n = nodes(&c, 0).await?;
            let ready = n
                .iter()
                .filter(|n| n.status.state == NodeState::Ready)
                .count();
            let leaders = n
                .iter()
                .filter(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
                .count();
            (ready == 5 && leaders == 1).then_some(n)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
    assert_eq!(
        listed
            .iter()
            .filter(|n| n.spec.role == NodeRole::Manager)
            .count(),
        3
    );

    // A worker's certificate is refused by the managers' cluster API itself, not only by
    // its own shoald: it can neither create a service, read a join token, nor ask for a
    // secret (it has no task using it; a node gets secrets only in its own view).
    let created = c
        .control(
            0,
            C::SecretCreate {
                spec: shoal_api::secrets::SecretSpec {
                    name: "db_password".into(),
                    ..Default::default()
                },
                data: shoal_api::secrets::SensitiveBytes::new(b"s3cr3t-pw".to_vec()),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("secret create: {}", e.message()));
    assert!(matches!(created, R::Created { .. }), "{created:?}");
    for req in [
        C::ServiceCreate {
            spec: spec("nope", 1, 0),
            registry_auth: None,
        },
        C::JoinToken {
            role: NodeRole::Manager,
            rotate: false,
        },
        C::SecretInspect {
            secret: "db_password".into(),
        },
        C::SecretList,
    ] {
        let e = worker_grpc_call(&c, 3, &m1, &req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
        assert!(e.message().contains("is a worker"), "{}", e.message());
    }

    // A worker can't change cluster state.
    let e = c
        .control(
            3,
            C::ServiceCreate {
                spec: spec("nope", 1, 0),
                registry_auth: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.message().contains("not a swarm manager"),
        "{}",
        e.message()
    );

    for k in 0..20u16 {
        let published = if k % 2 == 0 { 0 } else { 8000 + k };
        c.control(
            1,
            C::ServiceCreate {
                spec: spec(&format!("svc{k}"), 1, published),
                registry_auth: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create svc{k}: {}", e.message()));
    }
    // A conflicting port is refused, naming the holder.
    let e = c
        .control(
            2,
            C::ServiceCreate {
                spec: spec("clash", 1, 8001),
                registry_auth: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.message().contains("already in use by service svc1"),
        "{}",
        e.message()
    );

    let (s, t) = services_and_tasks(&c, 0).await;
    assert_eq!(s.len(), 20);
    assert_unique(&s, &t);

    // SIGKILL the leader; another manager takes over with everything intact.
    let listed = nodes(&c, 0).await.expect("the node list");
    let leader = listed
        .iter()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader))
        .unwrap();
    let leader_idx = c
        .nodes
        .iter()
        .position(|n| n.name == leader.description.hostname)
        .unwrap();
    c.kill(leader_idx);
    let survivor = (0..3).find(|i| *i != leader_idx).unwrap();
    // A write issued the moment the leader dies: the survivor still forwards it to the dead
    // leader, then sends it again to the next one; the caller sees one success.
    let started = std::time::Instant::now();
    c.control(
        survivor,
        C::ServiceCreate {
            spec: spec("svc-at-failover", 1, 0),
            registry_auth: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("a write issued as the leader died: {}", e.message()));
    eprintln!(
        "a write issued as the leader was SIGKILLed committed in {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(15), "a new leader", || async {
        let n = nodes(&c, survivor).await?;
        n.iter()
            .any(|n| n.id != leader.id && n.manager_status.as_ref().is_some_and(|m| m.leader))
            .then_some(())
    })
    .await
    .unwrap();
    let (s, _) = services_and_tasks(&c, survivor).await;
    assert_eq!(
        s.len(),
        21,
        "all services survive the leader's loss, the one created then once"
    );
    for k in 20..25u16 {
        eventually(
            Duration::from_secs(10),
            "a write after failover",
            || async {
                c.control(
                    survivor,
                    C::ServiceCreate {
                        spec: spec(&format!("svc{k}"), 1, 0),
                        registry_auth: None,
                    },
                )
                .await
                .ok()
            },
        )
        .await
        .unwrap();
    }
    c.restart(leader_idx).unwrap();

    // Every daemon restarted: state intact and still unique.
    for i in 0..5 {
        c.restart(i).unwrap();
    }
    let (s, t) = eventually(
        Duration::from_secs(20),
        "state after full restart",
        || async {
            let R::Services(s) = c.control(0, C::ServiceList).await.ok()? else {
                return None;
            };
            let R::Tasks(t) = c
                .control(
                    0,
                    C::TaskList {
                        service: None,
                        node: None,
                    },
                )
                .await
                .ok()?
            else {
                return None;
            };
            (s.len() == 26).then_some((s, t))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
    assert_unique(&s, &t);
    // Tasks run again after the restart.
    eventually(Duration::from_secs(30), "26 running services", || async {
        let R::Services(s) = c.control(0, C::ServiceList).await.ok()? else {
            return None;
        };
        s.iter()
            .all(|s| s.service_status.running_tasks == 1)
            .then_some(())
    })
    .await
    .map_err(|e| {
        let out = c.shoal(0, &["service", "ls"]);
        let ps = c.shoal(
            0,
            &[
                "node", "ps", "node-1", "node-2", "node-3", "node-4", "node-5",
            ],
        );
        anyhow::anyhow!(
            "{e}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&ps.stdout),
            (0..5)
                .map(|i| c.log(i))
                .collect::<Vec<_>>()
                .join("\n=====\n")
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let c = LocalCluster::start(1, 41).expect("start daemon");
    let ip = c.nodes[0].ip.clone();
    let mut init = init_req(&ip);
    if let LocalRequest::SwarmInit(i) = &mut init {
        i.dynamic_port_range = Some((30000, 30001));
    }
    c.local(0, init).await.expect("init");
    let e = c
        .control(
            0,
            C::ServiceInspect {
                service: "ghost".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.message(), "service ghost not found");
    let e = c
        .control(
            0,
            C::NodeInspect {
                node: "ghost".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.message(), "node ghost not found");
    c.control(
        0,
        C::ServiceCreate {
            spec: spec("a", 0, 0),
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    c.control(
        0,
        C::ServiceCreate {
            spec: spec("b", 0, 0),
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let e = c
        .control(
            0,
            C::ServiceCreate {
                spec: spec("c", 0, 0),
                registry_auth: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.message().contains("30000-30001"), "{}", e.message());
    let R::Services(s) = c.control(0, C::ServiceList).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.len(), 2, "the refused service was not half-created");
    let net = |name: &str, subnet: &str| NetworkSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        driver_configuration: Driver {
            name: "overlay".into(),
            options: BTreeMap::new(),
        },
        ingress: false,
        attachable: false,
        internal: false,
        ipam_options: IpamOptions {
            configs: vec![IpamConfig {
                subnet: subnet.into(),
                gateway: String::new(),
                ip_range: String::new(),
            }],
        },
    };
    c.control(
        0,
        C::NetworkCreate {
            spec: net("app", "198.19.50.0/24"),
        },
    )
    .await
    .unwrap();
    let e = c
        .control(
            0,
            C::NetworkCreate {
                spec: net("app2", "198.19.50.0/25"),
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.message().contains("overlaps 198.19.50.0/24"),
        "{}",
        e.message()
    );
    let e = c.local(0, init_req(&ip)).await.unwrap_err();
    assert!(e.message().contains("already part of a swarm"));
}
