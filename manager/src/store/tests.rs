//! Store behaviour: allocation through apply, refusals that change nothing.

use super::*;
use std::collections::BTreeMap;

const NOW: &str = "2026-11-25T12:00:00Z";

fn node(id: &str, role: NodeRole) -> Node {
    Node {
        id: id.into(),
        version: Version::default(),
        created_at: NOW.into(),
        updated_at: NOW.into(),
        spec: NodeSpec {
            name: String::new(),
            labels: BTreeMap::new(),
            role,
            availability: Availability::Active,
        },
        description: NodeDescription {
            hostname: format!("host-{id}"),
            executor: "docker".into(),
            dataplane: "nftables".into(),
            ..Default::default()
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
            addr: "198.18.0.1".into(),
        },
        manager_status: (role == NodeRole::Manager).then(ManagerStatus::default),
        raft_id: 1,
        ingress_addr: String::new(),
    }
}

/// A cluster with pool 198.19.0.0/16 in /24s and a dynamic range of `dyn_ports`.
pub(crate) fn cluster(dyn_ports: (u16, u16)) -> ClusterState {
    let mut s = ClusterState::default();
    let init = InitCluster {
        cluster: Cluster {
            id: "c1".into(),
            version: Version::default(),
            created_at: NOW.into(),
            updated_at: NOW.into(),
            spec: ClusterSpec::default(),
            tls_info: String::new(),
            default_addr_pool: vec!["198.19.0.0/16".into()],
            subnet_size: 24,
            data_path_port: 4789,
            join_tokens: None,
        },
        ca_key_pem: String::new(),
        worker_token: "w".into(),
        manager_token: "m".into(),
        node: node("n1", NodeRole::Manager),
        ingress_id: "ingress".into(),
        ingress_spec: net_spec("ingress", true, None),
        dynamic_ports: dyn_ports,
    };
    s.apply(1, Command::Init(Box::new(init))).unwrap();
    s
}

pub(crate) fn net_spec(name: &str, ingress: bool, subnet: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        driver_configuration: Driver {
            name: "overlay".into(),
            options: BTreeMap::new(),
        },
        ingress,
        attachable: false,
        internal: false,
        ipam_options: IpamOptions {
            configs: subnet
                .map(|s| {
                    vec![IpamConfig {
                        subnet: s.into(),
                        gateway: String::new(),
                        ip_range: String::new(),
                    }]
                })
                .unwrap_or_default(),
        },
    }
}

pub(crate) fn service_spec(
    name: &str,
    replicas: u64,
    ports: &[(u16, u16)],
    nets: &[&str],
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        task_template: TaskSpec {
            container_spec: ContainerSpec {
                command: vec!["sleep".into(), "1000".into()],
                ..Default::default()
            },
            runtime: Runtime::Native,
            networks: nets
                .iter()
                .map(|n| NetworkAttachmentConfig {
                    target: n.to_string(),
                    aliases: vec![],
                })
                .collect(),
            ..Default::default()
        },
        mode: ServiceMode::Replicated { replicas },
        update_config: UpdateConfig::default(),
        rollback_config: None,
        endpoint_spec: EndpointSpec {
            mode: EndpointMode::Vip,
            ports: ports
                .iter()
                .map(|(p, t)| PortConfig {
                    name: String::new(),
                    protocol: Protocol::Tcp,
                    target_port: *t,
                    published_port: *p,
                    publish_mode: PublishMode::Ingress,
                })
                .collect(),
            session_affinity: Default::default(),
        },
    }
}

fn create(
    s: &mut ClusterState,
    index: u64,
    id: &str,
    spec: ServiceSpec,
) -> Result<Applied, StoreError> {
    s.apply(
        index,
        Command::CreateService {
            id: id.into(),
            spec,
            now: NOW.into(),
        },
    )
}

#[test]
fn init_creates_ingress_with_subnet_and_vni() {
    let s = cluster((30000, 32767));
    let ingress = s.ingress().unwrap();
    assert_eq!(ingress.ipam_options.configs[0].subnet, "198.19.0.0/24");
    assert_eq!(ingress.ipam_options.configs[0].gateway, "198.19.0.1");
    assert_eq!(ingress.vni(), Some(4096));
}

#[test]
fn published_ports_are_unique_and_dynamic_ones_come_from_the_range() {
    let mut s = cluster((30000, 32767));
    create(
        &mut s,
        2,
        "a",
        service_spec("a", 1, &[(8080, 80), (0, 81)], &[]),
    )
    .unwrap();
    let a = &s.services["a"];
    assert_eq!(a.endpoint.ports[0].published_port, 8080);
    assert_eq!(a.endpoint.ports[1].published_port, 30000);
    assert_eq!(a.endpoint.virtual_ips.len(), 1, "one VIP on ingress");

    let before = s.clone();
    let err = create(
        &mut s,
        3,
        "b",
        service_spec("b", 1, &[(0, 80), (8080, 80)], &[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 8080/tcp is already in use by service a (a) as an ingress port"
    );
    assert_eq!(s, before, "a refused create leaves nothing allocated");
}

#[test]
fn exhausted_dynamic_range_is_reported_at_create() {
    let mut s = cluster((30000, 30001));
    create(
        &mut s,
        2,
        "a",
        service_spec("a", 1, &[(0, 80), (0, 81)], &[]),
    )
    .unwrap();
    let before = s.clone();
    let err = create(&mut s, 3, "b", service_spec("b", 1, &[(0, 80)], &[])).unwrap_err();
    assert!(matches!(err, StoreError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("30000-30001"), "{err}");
    assert_eq!(s, before);
}

#[test]
fn update_keeps_dynamic_ports_and_remove_releases_everything() {
    let mut s = cluster((30000, 32767));
    create(
        &mut s,
        2,
        "a",
        service_spec("a", 1, &[(0, 80), (0, 81)], &[]),
    )
    .unwrap();
    let mut spec = s.services["a"].spec.clone();
    // --publish-rm of the first port, --publish-add of a third.
    spec.endpoint_spec.ports.remove(0);
    spec.endpoint_spec.ports.push(PortConfig {
        name: String::new(),
        protocol: Protocol::Tcp,
        target_port: 82,
        published_port: 0,
        publish_mode: PublishMode::Ingress,
    });
    s.apply(
        3,
        Command::UpdateService {
            id: "a".into(),
            version: 2,
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    let ports: Vec<u16> = s.services["a"]
        .endpoint
        .ports
        .iter()
        .map(|p| p.published_port)
        .collect();
    assert_eq!(
        ports,
        vec![30001, 30002],
        "81 keeps 30001; 82 gets the next serial port"
    );
    s.apply(
        4,
        Command::RemoveService {
            id: "a".into(),
            now: NOW.into(),
        },
    )
    .unwrap();
    // All released: a new service can take 30001 explicitly.
    create(&mut s, 5, "b", service_spec("b", 1, &[(30001, 80)], &[])).unwrap();
}

#[test]
fn stale_version_is_refused() {
    let mut s = cluster((30000, 32767));
    create(&mut s, 2, "a", service_spec("a", 1, &[], &[])).unwrap();
    let spec = s.services["a"].spec.clone();
    let err = s
        .apply(
            3,
            Command::UpdateService {
                id: "a".into(),
                version: 1,
                spec,
                now: NOW.into(),
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }));
}

#[test]
fn overlapping_subnet_is_refused() {
    let mut s = cluster((30000, 32767));
    s.apply(
        2,
        Command::CreateNetwork {
            id: "n1".into(),
            spec: net_spec("app", false, Some("198.19.100.0/24")),
            now: NOW.into(),
        },
    )
    .unwrap();
    let before = s.clone();
    let err = s
        .apply(
            3,
            Command::CreateNetwork {
                id: "n2".into(),
                spec: net_spec("other", false, Some("198.19.100.128/25")),
                now: NOW.into(),
            },
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("overlaps 198.19.100.0/24"),
        "{err}"
    );
    assert_eq!(s, before);
}

#[test]
fn an_ip_range_bounds_vips_and_task_addresses() {
    let mut s = cluster((30000, 32767));
    let mut spec = net_spec("ranged", false, Some("198.19.210.0/24"));
    spec.ipam_options.configs[0].ip_range = "198.19.210.64/29".into();
    s.apply(
        2,
        Command::CreateNetwork {
            id: "n1".into(),
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(
        s.networks["n1"].ipam_options.configs[0].ip_range,
        "198.19.210.64/29"
    );
    // 8 addresses: a VIP and seven tasks fit, an eighth task does not.
    let err = create(&mut s, 3, "a", service_spec("a", 8, &[], &["n1"])).unwrap_err();
    assert!(err.to_string().contains("needs 9 addresses"), "{err}");
    create(&mut s, 4, "a", service_spec("a", 7, &[], &["n1"])).unwrap();
    let vip = &s.services["a"].endpoint.virtual_ips[0].addr;
    assert!(
        vip.starts_with("198.19.210.6") || vip.starts_with("198.19.210.7"),
        "{vip}"
    );
    // A range outside the subnet is refused, naming both.
    let mut bad = net_spec("bad", false, Some("198.19.211.0/24"));
    bad.ipam_options.configs[0].ip_range = "198.19.212.0/25".into();
    let before = s.clone();
    let err = s
        .apply(
            5,
            Command::CreateNetwork {
                id: "n2".into(),
                spec: bad,
                now: NOW.into(),
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network bad: ip range 198.19.212.0/25 must be a /30 or larger inside subnet 198.19.211.0/24"
    );
    assert_eq!(s, before);
}

#[test]
fn a_small_subnet_refuses_too_many_replicas_at_once() {
    let mut s = cluster((30000, 32767));
    // A /29 has 5 usable addresses after the gateway.
    s.apply(
        2,
        Command::CreateNetwork {
            id: "n1".into(),
            spec: net_spec("small", false, Some("198.19.200.0/29")),
            now: NOW.into(),
        },
    )
    .unwrap();
    let err = create(&mut s, 3, "a", service_spec("a", 5, &[], &["n1"])).unwrap_err();
    assert!(err.to_string().contains("needs 6 addresses"), "{err}");
    create(&mut s, 4, "a", service_spec("a", 4, &[], &["n1"])).unwrap();
}

#[test]
fn dnsrr_with_ingress_port_is_refused() {
    let mut s = cluster((30000, 32767));
    let mut spec = service_spec("a", 1, &[(8080, 80)], &[]);
    spec.endpoint_spec.mode = EndpointMode::Dnsrr;
    let err = create(&mut s, 2, "a", spec).unwrap_err();
    assert!(err.to_string().contains("can't be used with dnsrr mode"));
}

/// A new task of `service`, slot 1, from its current spec.
fn new_task(s: &ClusterState, id: &str, service: &str) -> Task {
    Task {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: service.into(),
        slot: 1,
        node_id: String::new(),
        spec: s.services[service].spec.task_template.clone(),
        spec_version: s.services[service].spec_version,
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: vec![],
        restart_count: 0,
    }
}

#[test]
fn task_states_never_move_backwards() {
    let mut s = cluster((30000, 32767));
    s.apply(
        2,
        Command::CreateNetwork {
            id: "n1".into(),
            spec: net_spec("app", false, None),
            now: NOW.into(),
        },
    )
    .unwrap();
    create(&mut s, 3, "a", service_spec("a", 1, &[], &["n1"])).unwrap();
    let task = new_task(&s, "t1", "a");
    let st = |state| TaskOp::Status {
        id: "t1".into(),
        status: TaskStatus {
            state,
            timestamp: NOW.into(),
            ..Default::default()
        },
    };
    s.apply(
        4,
        Command::Tasks {
            ops: vec![TaskOp::Create(Box::new(task))],
            now: NOW.into(),
        },
    )
    .unwrap();
    let t = &s.tasks["t1"];
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(
        t.networks_attachments[0].addresses,
        vec!["198.19.1.3/24".to_string()],
        "after gateway and VIP"
    );
    s.apply(
        5,
        Command::Tasks {
            ops: vec![
                TaskOp::Assign {
                    id: "t1".into(),
                    node_id: "n1".into(),
                },
                st(TaskState::Running),
                st(TaskState::Starting),
            ],
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(s.tasks["t1"].status.state, TaskState::Running);
    s.apply(
        6,
        Command::Tasks {
            ops: vec![st(TaskState::Failed), st(TaskState::Running)],
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(s.tasks["t1"].status.state, TaskState::Failed);
}

#[test]
fn a_preparing_task_takes_newer_pull_progress() {
    let mut s = cluster((30000, 32767));
    create(&mut s, 2, "a", service_spec("a", 1, &[], &[])).unwrap();
    let task = new_task(&s, "t1", "a");
    let st = |state, message: &str| TaskOp::Status {
        id: "t1".into(),
        status: TaskStatus {
            state,
            message: message.into(),
            timestamp: NOW.into(),
            ..Default::default()
        },
    };
    s.apply(
        3,
        Command::Tasks {
            ops: vec![
                TaskOp::Create(Box::new(task)),
                TaskOp::Assign {
                    id: "t1".into(),
                    node_id: "n1".into(),
                },
                st(TaskState::Preparing, "pulling image x"),
                st(TaskState::Preparing, "pulling image x: 1 of 2 layers"),
            ],
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(
        s.tasks["t1"].status.message,
        "pulling image x: 1 of 2 layers"
    );
    s.apply(
        4,
        Command::Tasks {
            ops: vec![
                st(TaskState::Running, "started"),
                st(TaskState::Running, "a later message"),
            ],
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(
        s.tasks["t1"].status.message, "started",
        "past preparing, a state moves on or nothing"
    );
}

#[test]
fn every_node_gets_its_own_ingress_address_and_frees_it_when_removed() {
    let mut s = cluster((30000, 32767));
    s.apply(2, Command::AddNode(Box::new(node("n2", NodeRole::Worker))))
        .unwrap();
    let (a1, a2) = (
        s.nodes["n1"].ingress_addr.clone(),
        s.nodes["n2"].ingress_addr.clone(),
    );
    assert!(!a1.is_empty() && !a2.is_empty() && a1 != a2, "{a1} {a2}");
    // A node without one (a cluster from before) gets one when it reports.
    s.nodes.get_mut("n2").unwrap().ingress_addr.clear();
    let status = |state| Command::NodeStatus {
        id: "n2".into(),
        status: NodeStatus {
            state,
            message: String::new(),
            addr: "198.18.0.2".into(),
        },
        description: None,
        now: NOW.into(),
    };
    s.apply(3, status(NodeState::Ready)).unwrap();
    let a3 = s.nodes["n2"].ingress_addr.clone();
    assert!(!a3.is_empty() && a3 != a1);
    let free = s.alloc.as_ref().unwrap().free_addresses("ingress");
    s.apply(4, status(NodeState::Down)).unwrap();
    s.apply(
        5,
        Command::RemoveNode {
            id: "n2".into(),
            force: false,
        },
    )
    .unwrap();
    assert_eq!(
        s.alloc.as_ref().unwrap().free_addresses("ingress"),
        free + 1
    );
}

#[test]
fn a_command_group_is_applied_all_or_nothing() {
    let mut s = cluster((30000, 30010));
    create(
        &mut s,
        2,
        "taken",
        service_spec("taken", 1, &[(8080, 80)], &[]),
    )
    .unwrap();
    let before = s.clone();
    // A network and a service that would be fine, then a service whose port is taken.
    let group = Command::All(vec![
        Command::CreateNetwork {
            id: "net1".into(),
            spec: net_spec("shop_app", false, None),
            now: NOW.into(),
        },
        Command::CreateService {
            id: "svc1".into(),
            spec: service_spec("shop_web", 2, &[(8081, 80)], &["net1"]),
            now: NOW.into(),
        },
        Command::CreateService {
            id: "svc2".into(),
            spec: service_spec("shop_api", 1, &[(8080, 80)], &["net1"]),
            now: NOW.into(),
        },
    ]);
    let err = s.apply(3, group).unwrap_err();
    assert!(err.to_string().contains("8080"), "{err}");
    assert_eq!(
        s, before,
        "nothing of the refused group stays, allocations included"
    );
    // The same group without the conflict is taken whole.
    let group = Command::All(vec![
        Command::CreateNetwork {
            id: "net1".into(),
            spec: net_spec("shop_app", false, None),
            now: NOW.into(),
        },
        Command::CreateService {
            id: "svc1".into(),
            spec: service_spec("shop_web", 2, &[(8081, 80)], &["net1"]),
            now: NOW.into(),
        },
    ]);
    s.apply(4, group).unwrap();
    assert!(s.networks.contains_key("net1") && s.services.contains_key("svc1"));
    // Groups do not nest.
    let nested = Command::All(vec![Command::All(vec![])]);
    assert!(s.apply(5, nested).is_err());
}

#[test]
fn nonsensical_deploy_settings_are_refused_naming_the_field() {
    const MIB: i64 = 1 << 20;
    type Edit = fn(&mut ServiceSpec);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "more replicas than a service may have",
            |s| {
                s.mode = ServiceMode::Replicated {
                    replicas: 100_000_000,
                }
            },
            "100000000 replicas is more than a service may have (100000); split it into several services",
        ),
        (
            "a log cap the node can't read",
            |s| {
                s.task_template.log_driver = Some(Driver {
                    name: "json-file".into(),
                    options: [("max-size".to_string(), "huge".to_string())].into(),
                })
            },
            "log option max-size=\"huge\": give a size such as 10m",
        ),
        (
            "negative CPU reservation",
            |s| s.task_template.resources.reservations.nano_cpus = -1,
            "Resources.Reservations.NanoCPUs (--reserve-cpu) is -0.000000001; it can't be negative",
        ),
        (
            "negative memory reservation",
            |s| s.task_template.resources.reservations.memory_bytes = -5,
            "Resources.Reservations.MemoryBytes (--reserve-memory) is -5; it can't be negative",
        ),
        (
            "negative memory limit",
            |s| s.task_template.resources.limits.memory_bytes = -1,
            "Resources.Limits.MemoryBytes (--limit-memory) is -1; it can't be negative",
        ),
        (
            "negative pids limit",
            |s| s.task_template.resources.limits.pids = -1,
            "Resources.Limits.Pids (--limit-pids) is -1; it can't be negative",
        ),
        (
            "a CPU amount below swarmkit's minimum",
            |s| s.task_template.resources.limits.nano_cpus = 1000,
            "Resources.Limits.NanoCPUs (--limit-cpu) is 0.000001 CPUs; give at least 0.001",
        ),
        (
            "memory below 4MiB",
            |s| s.task_template.resources.reservations.memory_bytes = MIB,
            "Resources.Reservations.MemoryBytes (--reserve-memory) is 1048576 bytes; give at least 4MiB",
        ),
        (
            "CPU reservation above the limit",
            |s| {
                s.task_template.resources.limits.nano_cpus = 1_000_000_000;
                s.task_template.resources.reservations.nano_cpus = 1_500_000_000;
            },
            "Resources.Reservations.NanoCPUs (--reserve-cpu 1.5) is above Resources.Limits.NanoCPUs (--limit-cpu 1); reserve at most the limit",
        ),
        (
            "memory reservation above the limit",
            |s| {
                s.task_template.resources.limits.memory_bytes = 64 * MIB;
                s.task_template.resources.reservations.memory_bytes = 128 * MIB;
            },
            "Resources.Reservations.MemoryBytes (--reserve-memory 134217728) is above Resources.Limits.MemoryBytes (--limit-memory 67108864)",
        ),
        (
            "failure ratio above 1",
            |s| s.update_config.max_failure_ratio = Ratio(1.5),
            "UpdateConfig.MaxFailureRatio (--update-max-failure-ratio) is 1.5; give a value from 0 to 1",
        ),
        (
            "negative failure ratio",
            |s| s.update_config.max_failure_ratio = Ratio(-0.1),
            "UpdateConfig.MaxFailureRatio (--update-max-failure-ratio) is -0.1",
        ),
        (
            "rollback failure ratio not a number",
            |s| {
                s.rollback_config = Some(UpdateConfig {
                    max_failure_ratio: Ratio(f32::NAN),
                    ..Default::default()
                })
            },
            "RollbackConfig.MaxFailureRatio (--rollback-max-failure-ratio) is NaN",
        ),
        (
            "a rollback that would roll back",
            |s| {
                s.rollback_config = Some(UpdateConfig {
                    failure_action: FailureAction::Rollback,
                    ..Default::default()
                })
            },
            "RollbackConfig.FailureAction (--rollback-failure-action) can't be rollback",
        ),
        (
            "max replicas on a global service",
            |s| {
                s.mode = ServiceMode::Global {};
                s.task_template.placement.max_replicas = 2;
            },
            "Placement.MaxReplicas (--replicas-max-per-node) applies to replicated services only",
        ),
        (
            "spread over something unknown",
            |s| {
                s.task_template.placement.preferences = vec![PlacementPreference {
                    spread: SpreadOver {
                        spread_descriptor: "node.lables.zone".into(),
                    },
                }]
            },
            "Placement.Preferences (--placement-pref spread=node.lables.zone): spread over node.labels.KEY",
        ),
    ];
    for (name, edit, want) in cases {
        let mut s = cluster((30000, 32767));
        let before = s.clone();
        let mut spec = service_spec("web", 1, &[], &[]);
        edit(&mut spec);
        let e = s
            .apply(
                2,
                Command::CreateService {
                    id: "web".into(),
                    spec: spec.clone(),
                    now: NOW.into(),
                },
            )
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("service web: {want}")),
            "case: {name}: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::Invalid, "case: {name}");
        assert_eq!(s, before, "case: {name}: nothing changed");
        // The same refusal on update, leaving the service as it was.
        let mut base = service_spec("web", 1, &[], &[]);
        // A mode can't change on update; a refused replica count is not a mode.
        if matches!(spec.mode, ServiceMode::Global {}) {
            base.mode = spec.mode.clone();
        }
        create(&mut s, 3, "web", base).unwrap();
        let before = s.clone();
        let e = s
            .apply(
                4,
                Command::UpdateService {
                    id: "web".into(),
                    version: 3,
                    spec,
                    now: NOW.into(),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains(want), "case: {name} (update): {e}");
        assert_eq!(s, before, "case: {name} (update): nothing changed");
    }
    // Sensible values pass.
    let mut s = cluster((30000, 32767));
    let mut spec = service_spec("web", 1, &[], &[]);
    spec.task_template.resources.limits.nano_cpus = 2_000_000_000;
    spec.task_template.resources.reservations.nano_cpus = 500_000_000;
    spec.task_template.resources.reservations.memory_bytes = 64 * MIB;
    spec.task_template.placement.max_replicas = 1;
    spec.task_template.placement.preferences = vec![PlacementPreference {
        spread: SpreadOver {
            spread_descriptor: "node.labels.zone".into(),
        },
    }];
    spec.update_config.max_failure_ratio = Ratio(0.25);
    spec.update_config.failure_action = FailureAction::Rollback;
    create(&mut s, 2, "web", spec).unwrap();
}

#[test]
fn state_and_nodes_written_before_these_fields_still_decode() {
    let s = cluster((30000, 32767));
    let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
    json.as_object_mut().unwrap().remove("task_times");
    for node in json["nodes"].as_object_mut().unwrap().values_mut() {
        node["Description"]
            .as_object_mut()
            .unwrap()
            .remove("Resources");
    }
    let old: ClusterState = serde_json::from_value(json).unwrap();
    assert!(old.task_times.is_empty());
    assert_eq!(old.nodes["n1"].description.resources, Resources::default());
}

#[test]
fn registry_credentials_stay_through_updates_and_go_with_the_service() {
    let mut s = cluster((30000, 32767));
    let set = |id: &str| Command::SetRegistryAuth {
        service_id: id.into(),
        sealed: "c2VhbGVk".into(),
    };
    assert!(
        s.apply(2, set("a")).is_err(),
        "no credentials for a service that does not exist"
    );
    // Created together with its credentials, all or nothing.
    s.apply(
        3,
        Command::All(vec![
            Command::CreateService {
                id: "a".into(),
                spec: service_spec("a", 1, &[], &[]),
                now: NOW.into(),
            },
            set("a"),
        ]),
    )
    .unwrap();
    assert_eq!(s.registry_auth["a"], "c2VhbGVk");
    let mut spec = s.services["a"].spec.clone();
    spec.labels.insert("x".into(), "y".into());
    let version = s.services["a"].version.index;
    s.apply(
        4,
        Command::UpdateService {
            id: "a".into(),
            version,
            spec,
            now: NOW.into(),
        },
    )
    .unwrap();
    assert_eq!(
        s.registry_auth["a"], "c2VhbGVk",
        "an update without credentials keeps them"
    );
    let json = serde_json::to_string(&s.services["a"]).unwrap();
    assert!(!json.contains("c2VhbGVk"), "not part of the service");
    s.apply(
        5,
        Command::RemoveService {
            id: "a".into(),
            now: NOW.into(),
        },
    )
    .unwrap();
    assert!(s.registry_auth.is_empty());
}

mod files {
    //! Secrets and configs: immutable, referenced by id, removable only when unused.
    use super::*;
    use shoal_api::secrets::*;

    pub(crate) fn secret_spec(name: &str) -> SecretSpec {
        SecretSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    pub(crate) fn add_secret(s: &mut ClusterState, index: u64, id: &str, name: &str) {
        s.apply(
            index,
            Command::CreateSecret {
                id: id.into(),
                spec: secret_spec(name),
                sealed: "c2VhbGVk".into(),
                now: NOW.into(),
            },
        )
        .unwrap();
    }

    fn add_config(s: &mut ClusterState, index: u64, id: &str, name: &str) {
        s.apply(
            index,
            Command::CreateConfig {
                id: id.into(),
                spec: ConfigSpec {
                    name: name.into(),
                    data: b"port=80\n".to_vec(),
                    ..Default::default()
                },
                now: NOW.into(),
            },
        )
        .unwrap();
    }

    fn with_files(secrets: &[(&str, &str)], configs: &[(&str, &str)]) -> ServiceSpec {
        let mut spec = service_spec("web", 1, &[], &[]);
        let c = &mut spec.task_template.container_spec;
        c.secrets = secrets
            .iter()
            .map(|(name, target)| SecretReference {
                file: Some(FileTarget::new(*target)),
                secret_id: String::new(),
                secret_name: (*name).into(),
            })
            .collect();
        c.configs = configs
            .iter()
            .map(|(name, target)| ConfigReference {
                file: Some(FileTarget::new(*target)),
                config_id: String::new(),
                config_name: (*name).into(),
            })
            .collect();
        spec
    }

    #[test]
    fn names_are_unique_and_the_log_keeps_only_sealed_data() {
        let mut s = cluster((30000, 30010));
        add_secret(&mut s, 2, "s1", "db_password");
        assert_eq!(s.secrets["s1"].spec.name, "db_password");
        assert_eq!(s.secret_data["s1"], "c2VhbGVk");
        let json = serde_json::to_string(&s.secrets["s1"]).unwrap();
        assert!(
            !json.contains("c2VhbGVk"),
            "a secret object never shows its data"
        );
        let before = s.clone();
        let err = s
            .apply(
                3,
                Command::CreateSecret {
                    id: "s2".into(),
                    spec: secret_spec("db_password"),
                    sealed: "eA==".into(),
                    now: NOW.into(),
                },
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
        let err = s
            .apply(
                3,
                Command::CreateSecret {
                    id: "s2".into(),
                    spec: secret_spec("bad name"),
                    sealed: "eA==".into(),
                    now: NOW.into(),
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("invalid secret name"), "{err}");
        assert_eq!(s, before);
    }

    #[test]
    fn references_get_ids_and_unknown_names_are_refused() {
        let mut s = cluster((30000, 30010));
        add_secret(&mut s, 2, "s1", "db");
        add_config(&mut s, 3, "c1", "site");
        create(
            &mut s,
            4,
            "web",
            with_files(&[("db", "db")], &[("site", "/etc/site.conf")]),
        )
        .unwrap();
        let c = &s.services["web"].spec.task_template.container_spec;
        assert_eq!(c.secrets[0].secret_id, "s1");
        assert_eq!(c.configs[0].config_id, "c1");

        let before = s.clone();
        let mut spec = with_files(&[("nope", "nope")], &[]);
        spec.name = "other".into();
        let err = create(&mut s, 5, "other", spec).unwrap_err().to_string();
        assert!(
            err.contains("service other") && err.contains("secret nope not found"),
            "{err}"
        );
        let mut spec = with_files(&[("db", "../../etc/shadow")], &[]);
        spec.name = "other".into();
        let err = create(&mut s, 5, "other", spec).unwrap_err().to_string();
        assert!(err.contains("climbs out of /run/secrets"), "{err}");
        assert_eq!(s, before);
    }

    #[test]
    fn an_object_in_use_is_not_removed_and_rotation_frees_the_old_one() {
        let mut s = cluster((30000, 30010));
        add_secret(&mut s, 2, "s1", "db_v1");
        add_secret(&mut s, 3, "s2", "db_v2");
        create(&mut s, 4, "web", with_files(&[("db_v1", "db")], &[])).unwrap();
        let err = s
            .apply(5, Command::RemoveSecret { id: "db_v1".into() })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret db_v1") && err.contains("in use by the following service: web"),
            "{err}"
        );
        // Rotation: same target, new secret; the service no longer names the old one, but
        // its task still runs with it until the rollout replaces it.
        let mut t = new_task(&s, "t1", "web");
        t.node_id = "n1".into();
        s.apply(
            6,
            Command::Tasks {
                ops: vec![TaskOp::Create(Box::new(t))],
                now: NOW.into(),
            },
        )
        .unwrap();
        let version = s.services["web"].version.index;
        s.apply(
            7,
            Command::UpdateService {
                id: "web".into(),
                version,
                spec: with_files(&[("db_v2", "db")], &[]),
                now: NOW.into(),
            },
        )
        .unwrap();
        let err = s
            .apply(8, Command::RemoveSecret { id: "s1".into() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("task t1 still uses it"), "{err}");
        s.apply(
            9,
            Command::Tasks {
                ops: vec![TaskOp::Status {
                    id: "t1".into(),
                    status: TaskStatus {
                        state: TaskState::Shutdown,
                        timestamp: NOW.into(),
                        ..Default::default()
                    },
                }],
                now: NOW.into(),
            },
        )
        .unwrap();
        s.apply(10, Command::RemoveSecret { id: "s1".into() })
            .unwrap();
        assert!(!s.secrets.contains_key("s1") && !s.secret_data.contains_key("s1"));
        // A rollback to the spec that named the removed secret is refused.
        let err = s
            .apply(
                11,
                Command::RollbackService {
                    id: "web".into(),
                    now: NOW.into(),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("db_v1 (s1) no longer exists"), "{err}");
    }

    #[test]
    fn configs_are_checked_and_removable_once_unused() {
        let mut s = cluster((30000, 30010));
        let err = s
            .apply(
                2,
                Command::CreateConfig {
                    id: "c1".into(),
                    spec: ConfigSpec {
                        name: "big".into(),
                        data: vec![b'x'; MAX_DATA_SIZE],
                        ..Default::default()
                    },
                    now: NOW.into(),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("500 KiB"), "{err}");
        add_config(&mut s, 3, "c1", "site");
        create(&mut s, 4, "web", with_files(&[], &[("site", "site.conf")])).unwrap();
        assert!(
            s.apply(5, Command::RemoveConfig { id: "site".into() })
                .is_err()
        );
        s.apply(
            6,
            Command::RemoveService {
                id: "web".into(),
                now: NOW.into(),
            },
        )
        .unwrap();
        s.apply(7, Command::RemoveConfig { id: "site".into() })
            .unwrap();
        assert!(s.configs.is_empty());
    }
}

#[test]
fn a_request_id_applies_once_and_the_window_stays_bounded() {
    use super::{RECENT_REQUESTS, RecentRequests};
    let mut r = RecentRequests::default();
    assert!(r.first_time(7));
    assert!(!r.first_time(7), "the copy of a re-sent proposal");
    for id in 100..100 + RECENT_REQUESTS as u64 {
        assert!(r.first_time(id));
    }
    assert!(r.first_time(7), "forgotten once older than the window");
    // Snapshots carry the window, so a manager restored from one skips the same copies.
    let back: RecentRequests = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let mut back = back;
    assert!(!back.first_time(7));
}
