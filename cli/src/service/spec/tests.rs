use super::*;
use crate::publish::PortMatch;
use shoal_api::control::ServiceStatus;

fn port(published: u16, target: u16) -> PortConfig {
    PortConfig {
        name: String::new(),
        protocol: Protocol::Tcp,
        target_port: target,
        published_port: published,
        publish_mode: PublishMode::Ingress,
    }
}

fn opts(args: &[&str]) -> CreateOptions {
    CreateOptions {
        name: "web".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..CreateOptions::default()
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn create_defaults() {
    let plan = create_plan(&opts(&["nginx"]), &no_env).unwrap();
    let spec = plan.spec;
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(spec.task_template.runtime, Runtime::Docker);
    assert_eq!(spec.task_template.container_spec.image, "nginx");
    assert_eq!(
        spec.task_template.container_spec.stop_grace_period,
        10_000_000_000
    );
    assert_eq!(spec.update_config, UpdateConfig::default());
    assert_eq!(spec.task_template.restart_policy, RestartPolicy::default());
    assert_eq!(spec.endpoint_spec, EndpointSpec::default());
    assert!(plan.networks.is_empty());
}

#[test]
fn create_with_everything() {
    let o = CreateOptions {
        replicas: Some(3),
        networks: vec!["backend".into(), "name=front,alias=www".into()],
        publish: vec![
            "8080:80".into(),
            "published=53,target=53,protocol=udp,mode=host".into(),
        ],
        endpoint_mode: Some(EndpointMode::Vip),
        stop_grace_period: Some(1),
        constraints: vec![" node.role==manager ".into()],
        env: vec!["A=1".into(), "HOME".into(), "UNSET".into()],
        labels: vec!["tier=web".into(), "flag".into()],
        update_parallelism: Some(2),
        update_delay: Some(5),
        update_order: Some(UpdateOrder::StartFirst),
        restart_condition: Some(RestartCondition::OnFailure),
        restart_delay: Some(7),
        restart_max_attempts: Some(4),
        ..opts(&["nginx", "-g", "daemon off;"])
    };
    let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
    let plan = create_plan(&o, &lookup).unwrap();
    let s = &plan.spec;
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
    let c = &s.task_template.container_spec;
    assert_eq!(c.args, vec!["-g", "daemon off;"]);
    assert_eq!(c.env, vec!["A=1", "HOME=/root", "UNSET"]);
    assert_eq!(c.stop_grace_period, 1);
    assert_eq!(
        s.task_template.placement.constraints,
        vec!["node.role==manager"]
    );
    assert_eq!(s.labels.get("flag").map(String::as_str), Some(""));
    assert_eq!(
        s.update_config,
        UpdateConfig {
            parallelism: 2,
            delay: 5,
            order: UpdateOrder::StartFirst,
            ..Default::default()
        }
    );
    assert_eq!(
        s.task_template.restart_policy,
        RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay: 7,
            max_attempts: 4,
            window: 0,
        }
    );
    assert_eq!(
        s.endpoint_spec.ports,
        vec![
            port(8080, 80),
            PortConfig {
                protocol: Protocol::Udp,
                publish_mode: PublishMode::Host,
                ..port(53, 53)
            }
        ]
    );
    assert_eq!(
        plan.networks,
        vec![
            NetworkRef {
                name: "backend".into(),
                aliases: vec![]
            },
            NetworkRef {
                name: "front".into(),
                aliases: vec!["www".into()]
            }
        ]
    );
    let ids = BTreeMap::from([
        ("backend".to_string(), "id-b".to_string()),
        ("front".to_string(), "id-f".to_string()),
    ]);
    assert_eq!(
        attachments(&plan.networks, &ids),
        vec![
            NetworkAttachmentConfig {
                target: "id-b".into(),
                aliases: vec![]
            },
            NetworkAttachmentConfig {
                target: "id-f".into(),
                aliases: vec!["www".into()]
            }
        ]
    );
}

#[test]
fn create_rejects_bad_input() {
    let cases: Vec<(CreateOptions, &str)> = vec![
        (
            CreateOptions {
                global: true,
                replicas: Some(2),
                ..opts(&["nginx"])
            },
            "replicas can only be used with replicated mode",
        ),
        (
            CreateOptions {
                publish: vec!["8080:80".into(), "8080:81".into()],
                ..opts(&["nginx"])
            },
            "port 8080/tcp is published twice (targets 80 and 81); publish each port once",
        ),
        (
            CreateOptions {
                publish: vec!["80".into()],
                endpoint_mode: Some(EndpointMode::Dnsrr),
                ..opts(&["nginx"])
            },
            "--endpoint-mode dnsrr cannot be used with ingress port 80/tcp; publish it with mode=host or use --endpoint-mode vip",
        ),
        (
            CreateOptions {
                constraints: vec!["node.role=manager".into()],
                ..opts(&["nginx"])
            },
            r#"invalid --constraint "node.role=manager": use KEY==VALUE or KEY!=VALUE (e.g. node.role==manager)"#,
        ),
        (
            CreateOptions {
                env: vec!["=x".into()],
                ..opts(&["nginx"])
            },
            r#"invalid --env "=x": missing variable name (use KEY=VALUE)"#,
        ),
        (
            CreateOptions {
                networks: vec!["alias=x".into()],
                ..opts(&["nginx"])
            },
            r#"invalid --network "alias=x": missing name=NETWORK"#,
        ),
        (
            CreateOptions {
                publish: vec!["80/icmp".into()],
                ..opts(&["nginx"])
            },
            r#"invalid --publish "80/icmp": unknown protocol "icmp" (use tcp, udp or sctp)"#,
        ),
    ];
    for (o, want) in cases {
        assert_eq!(create_plan(&o, &no_env).unwrap_err().to_string(), want);
    }
    // Dnsrr is fine with host-mode ports, and dynamic ports may repeat.
    let ok = CreateOptions {
        publish: vec![
            "published=80,target=80,mode=host".into(),
            "81".into(),
            "81/udp".into(),
        ],
        endpoint_mode: Some(EndpointMode::Dnsrr),
        ..opts(&["nginx"])
    };
    assert!(create_plan(&ok, &no_env).is_err(), "ingress 81 under dnsrr");
    let ok = CreateOptions {
        publish: vec!["80".into(), "80".into()],
        ..opts(&["nginx"])
    };
    assert!(create_plan(&ok, &no_env).is_ok());
}

fn view(spec_ports: Vec<PortConfig>, allocated: Vec<PortConfig>) -> ServiceView {
    let plan = create_plan(&opts(&["nginx"]), &no_env).unwrap();
    let mut spec = plan.spec;
    spec.endpoint_spec.ports = spec_ports;
    spec.task_template.networks = vec![NetworkAttachmentConfig {
        target: "net-a".into(),
        aliases: vec![],
    }];
    spec.task_template.container_spec.env = vec!["A=1".into(), "B=2".into()];
    spec.task_template.placement.constraints = vec!["node.role==worker".into()];
    ServiceView {
        service: Service {
            id: "svc1".into(),
            version: Version { index: 42 },
            created_at: String::new(),
            updated_at: String::new(),
            spec: spec.clone(),
            previous_spec: None,
            endpoint: Endpoint {
                spec: spec.endpoint_spec.clone(),
                ports: allocated,
                virtual_ips: vec![],
            },
            update_status: None,
            spec_version: Version { index: 40 },
        },
        service_status: ServiceStatus::default(),
    }
}

fn rm(spec: &str) -> (String, PortMatch) {
    (
        spec.to_string(),
        crate::publish::parse_publish_rm(spec).unwrap(),
    )
}

#[test]
fn effective_published_follows_the_allocation() {
    let spec = vec![port(0, 80), port(8080, 81), port(0, 80)];
    let allocated = vec![port(30001, 80), port(8080, 81), port(30002, 80)];
    assert_eq!(
        effective_published(&spec, &allocated),
        vec![30001, 8080, 30002]
    );
    assert_eq!(effective_published(&spec, &[]), vec![0, 8080, 0]);
}

#[test]
fn publish_rm_by_allocated_port_keeps_dynamic_ports_dynamic() {
    let spec = vec![port(0, 80), port(0, 443), port(8080, 8080)];
    let allocated = vec![port(30000, 80), port(30001, 443), port(8080, 8080)];
    // 30000 is the allocated port of the first, dynamic entry.
    let ports = update_ports(&spec, &allocated, &[rm("30000")], &[]).unwrap();
    assert_eq!(ports, vec![port(0, 443), port(8080, 8080)]);
    // By published:target.
    let ports = update_ports(&spec, &allocated, &[rm("8080:8080")], &[]).unwrap();
    assert_eq!(ports, vec![port(0, 80), port(0, 443)]);
    // Docker's meaning: the target port when no published port matches.
    let ports = update_ports(&spec, &allocated, &[rm("443")], &[]).unwrap();
    assert_eq!(ports, vec![port(0, 80), port(8080, 8080)]);
    // Long form.
    let ports = update_ports(&spec, &allocated, &[rm("published=30001,target=443")], &[]).unwrap();
    assert_eq!(ports, vec![port(0, 80), port(8080, 8080)]);
    // Protocol must match.
    assert_eq!(
        update_ports(&spec, &allocated, &[rm("8080/udp")], &[])
            .unwrap_err()
            .to_string(),
        r#"--publish-rm "8080/udp": the service publishes no such port"#
    );
}

#[test]
fn publish_add_and_rm_together() {
    let spec = vec![port(8080, 80)];
    let allocated = vec![port(8080, 80)];
    let add = crate::publish::parse_publish("publish-add", "8080:81").unwrap();
    assert_eq!(
        update_ports(&spec, &allocated, &[], &add)
            .unwrap_err()
            .to_string(),
        "port 8080/tcp is already published to target port 80; remove it first with --publish-rm 8080"
    );
    let ports = update_ports(&spec, &allocated, &[rm("8080")], &add).unwrap();
    assert_eq!(ports, vec![port(8080, 81)]);
    // Adding what is already there changes nothing, also for an allocated dynamic port.
    let same = crate::publish::parse_publish("publish-add", "8080:80").unwrap();
    assert_eq!(update_ports(&spec, &allocated, &[], &same).unwrap(), spec);
    let dynamic = vec![port(0, 80)];
    let alloc = vec![port(30005, 80)];
    let again = crate::publish::parse_publish("publish-add", "80").unwrap();
    assert_eq!(
        update_ports(&dynamic, &alloc, &[], &again).unwrap(),
        dynamic
    );
    let pinned = crate::publish::parse_publish("publish-add", "30005:80").unwrap();
    assert_eq!(
        update_ports(&dynamic, &alloc, &[], &pinned).unwrap(),
        dynamic
    );
}

#[test]
fn apply_update_is_read_modify_write() {
    let v = view(vec![port(0, 80)], vec![port(30000, 80)]);
    let ops = UpdateOps {
        replicas: Some(5),
        image: Some("nginx:2".into()),
        env_rm: vec!["A".into()],
        network_rm: vec!["a".into()],
        constraint_rm: vec!["node.role==worker".into()],
        force: true,
        label_rm: vec!["none".into()],
        update_delay: Some(9),
        ..UpdateOps::default()
    }
    .parse(
        &UpdateFlags {
            args: Some("  -g   x "),
            env_add: &["B=3".into(), "C=4".into()],
            publish_add: &["9090:90".into()],
            network_add: &["b".into()],
            constraint_add: &["node.labels.ssd==true".into()],
            label_add: &["k=v".into()],
            ..UpdateFlags::default()
        },
        &no_env,
    )
    .unwrap();
    let ids = BTreeMap::from([
        ("a".to_string(), "net-a".to_string()),
        ("b".to_string(), "net-b".to_string()),
    ]);
    let s = apply_update(&v, &ops, &ids).unwrap();
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 5 });
    let c = &s.task_template.container_spec;
    assert_eq!(c.image, "nginx:2");
    assert_eq!(c.args, vec!["-g", "x"]);
    assert_eq!(c.env, vec!["B=3", "C=4"]);
    assert_eq!(
        s.task_template.networks,
        vec![NetworkAttachmentConfig {
            target: "net-b".into(),
            aliases: vec![]
        }]
    );
    assert_eq!(
        s.task_template.placement.constraints,
        vec!["node.labels.ssd==true"]
    );
    assert_eq!(s.task_template.force_update, 1);
    assert_eq!(s.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(s.update_config.delay, 9);
    // The dynamic port stays 0 in the spec; the new one is appended.
    assert_eq!(s.endpoint_spec.ports, vec![port(0, 80), port(9090, 90)]);
    // Untouched fields are as read.
    assert_eq!(s.name, v.service.spec.name);
    assert_eq!(
        s.task_template.restart_policy,
        v.service.spec.task_template.restart_policy
    );
}

#[test]
fn apply_update_errors() {
    let v = view(vec![], vec![]);
    let ids = BTreeMap::from([("a".to_string(), "net-a".to_string())]);
    let err =
        |ops: UpdateOps, v: &ServiceView| apply_update(v, &ops, &ids).unwrap_err().to_string();
    assert_eq!(
        err(
            UpdateOps {
                network_add: vec![NetworkRef {
                    name: "a".into(),
                    aliases: vec![]
                }],
                ..UpdateOps::default()
            },
            &v
        ),
        "service is already attached to network a"
    );
    assert_eq!(
        err(
            UpdateOps {
                network_rm: vec!["zzz".into()],
                ..UpdateOps::default()
            },
            &v
        ),
        r#"--network-rm "zzz": the service is not attached to this network"#
    );
    let mut global = v.clone();
    global.service.spec.mode = ServiceMode::Global {};
    assert_eq!(
        err(
            UpdateOps {
                replicas: Some(2),
                ..UpdateOps::default()
            },
            &global
        ),
        "replicas can only be used with replicated mode"
    );
    let mut native = v.clone();
    native.service.spec.task_template.runtime = Runtime::Native;
    native
        .service
        .spec
        .task_template
        .container_spec
        .image
        .clear();
    native.service.spec.task_template.container_spec.command = vec!["sleep".into(), "1".into()];
    assert_eq!(
        err(
            UpdateOps {
                image: Some("x".into()),
                ..UpdateOps::default()
            },
            &native
        ),
        "--image cannot be used with a native service; change its command with --args"
    );
    let ops = UpdateOps {
        args: Some(vec!["sleep".into(), "9".into()]),
        ..UpdateOps::default()
    };
    let s = apply_update(&native, &ops, &ids).unwrap();
    assert_eq!(s.task_template.container_spec.command, vec!["sleep", "9"]);
    let dnsrr = view(vec![port(0, 80)], vec![port(30000, 80)]);
    assert!(
        err(
            UpdateOps {
                endpoint_mode: Some(EndpointMode::Dnsrr),
                ..UpdateOps::default()
            },
            &dnsrr
        )
        .starts_with("--endpoint-mode dnsrr cannot be used with ingress port 80/tcp")
    );
}

#[test]
fn scale_specifiers() {
    assert_eq!(parse_scale("web=3"), Ok(("web".to_string(), 3)));
    assert_eq!(
        parse_scale("web").unwrap_err().to_string(),
        r#"invalid scale specifier "web": use SERVICE=REPLICAS, e.g. web=3"#
    );
    assert_eq!(
        parse_scale("web=x").unwrap_err().to_string(),
        r#"invalid scale specifier "web=x": replicas must be a whole number (use SERVICE=REPLICAS, e.g. web=3)"#
    );
    let v = view(vec![], vec![]);
    assert_eq!(
        scaled(&v.service.spec, 7).unwrap().mode,
        ServiceMode::Replicated { replicas: 7 }
    );
    let mut g = v.service.spec.clone();
    g.mode = ServiceMode::Global {};
    assert_eq!(
        scaled(&g, 2).unwrap_err().to_string(),
        "scale can only be used with replicated mode"
    );
}

#[test]
fn random_names_look_like_dockers() {
    let a = random_name(1);
    let b = random_name(2);
    assert!(a.contains('_') && b.contains('_'));
    assert_ne!(a, b);
}

#[test]
fn mounts_and_limits_are_parsed_like_docker() {
    use crate::service::options::{parse_bytes, parse_cpus, parse_mount};
    let m = parse_mount("--mount", "type=bind,source=/srv/www,target=/www,readonly").unwrap();
    assert_eq!(
        (
            m.kind.as_str(),
            m.source.as_str(),
            m.target.as_str(),
            m.read_only
        ),
        ("bind", "/srv/www", "/www", true)
    );
    assert!(
        !parse_mount("--mount", "type=bind,src=/a,dst=/b")
            .unwrap()
            .read_only
    );
    // Docker's default type is volume; its options, quoted as CSV.
    let v = parse_mount(
        "--mount",
        r#"source=data,target=/data,volume-driver=local,"volume-opt=o=size=10m,uid=1000",volume-opt=type=tmpfs,volume-label=tier=db,volume-nocopy"#,
    )
    .unwrap();
    assert_eq!(v.kind, "volume");
    let vo = v.volume_options.unwrap();
    assert!(vo.no_copy);
    assert_eq!(vo.labels["tier"], "db");
    let d = vo.driver_config.unwrap();
    assert_eq!(d.name, "local");
    assert_eq!(d.options["o"], "size=10m,uid=1000");
    assert_eq!(d.options["type"], "tmpfs");
    let t = parse_mount(
        "--mount",
        "type=tmpfs,target=/cache,tmpfs-size=64m,tmpfs-mode=1770",
    )
    .unwrap();
    let to = t.tmpfs_options.unwrap();
    assert_eq!((to.size_bytes, to.mode), (64 << 20, 0o1770));
    let b = parse_mount(
        "--mount",
        "type=bind,source=/a,target=/b,bind-propagation=rshared",
    )
    .unwrap();
    assert_eq!(b.bind_options.unwrap().propagation, "rshared");
    for bad in [
        "type=volume,source=/abs,target=/data",
        "source=v",
        "type=bind,source=rel,target=/b",
        "type=bind,source=/a,target=/b,color=red",
        "type=bind,source=/a,target=/b,volume-nocopy",
        "type=tmpfs,source=x,target=/t",
        "type=tmpfs,target=/t,tmpfs-mode=999",
        "type=nfs,target=/t",
        "type=volume,target=rel",
    ] {
        assert!(parse_mount("--mount", bad).is_err(), "{bad}");
    }
    assert_eq!(parse_memory_limit("64M").unwrap(), 64 << 20);
    assert_eq!(parse_memory_limit("1g").unwrap(), 1 << 30);
    assert_eq!(parse_memory_limit("1.5G").unwrap(), 3 << 29);
    assert!(parse_memory_limit("1M").is_err(), "below Docker's minimum");
    assert!(parse_memory_limit("lots").is_err());
    assert_eq!(parse_bytes("--reserve-memory", "1M").unwrap(), 1 << 20);
    assert_eq!(parse_cpus("--limit-cpu", "0.5").unwrap(), 500_000_000);
    assert!(parse_cpus("--limit-cpu", "-1").is_err());
    assert_eq!(
        parse_cpus("--limit-cpu", "0").unwrap(),
        0,
        "0 clears, as in Docker"
    );
    assert_eq!(parse_memory_limit("0").unwrap(), 0);
    assert!(parse_cpus("--limit-cpu", "x").is_err());
}

#[test]
fn native_services_refuse_container_only_flags() {
    use crate::service::options::{ListEdit, SpecEdits, parse_mount};
    let with = |edits: SpecEdits| CreateOptions {
        name: "web".into(),
        native: true,
        args: vec!["sleep".into(), "1".into()],
        edits,
        ..Default::default()
    };
    let bind = SpecEdits {
        mounts: ListEdit {
            add: vec![parse_mount("--mount", "type=bind,source=/a,target=/b").unwrap()],
            rm: vec![],
        },
        ..Default::default()
    };
    assert!(
        create_plan(&with(bind.clone()), &|_| None).is_ok(),
        "a native task takes binds, in its own mount namespace"
    );
    let sysctl = SpecEdits {
        sysctls: ListEdit {
            add: vec![("kernel.shmmax".into(), "1".into())],
            rm: vec![],
        },
        ..Default::default()
    };
    let err = create_plan(&with(sysctl), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--sysctl other than net.*"), "{err}");
    let driver = SpecEdits {
        mounts: ListEdit {
            add: vec![parse_mount("--mount", "source=data,target=/d,volume-opt=type=nfs").unwrap()],
            rm: vec![],
        },
        ..Default::default()
    };
    let err = create_plan(&with(driver), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("volume \"data\": a native task"), "{err}");
    let local = SpecEdits {
        mounts: ListEdit {
            add: vec![parse_mount("--mount", "source=data,target=/d").unwrap()],
            rm: vec![],
        },
        ..Default::default()
    };
    assert!(
        create_plan(&with(local), &|_| None).is_ok(),
        "a local volume is fine"
    );
    let hostname = SpecEdits {
        hostname: Some("h".into()),
        ..Default::default()
    };
    let err = create_plan(&with(hostname), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--hostname applies to containers only"),
        "{err}"
    );
    let o = CreateOptions {
        name: "web".into(),
        args: vec!["img".into()],
        edits: SpecEdits {
            limit_memory: Some(64 << 20),
            limit_cpu: Some(500_000_000),
            ..bind
        },
        ..Default::default()
    };
    let plan = create_plan(&o, &|_| None).unwrap();
    let t = &plan.spec.task_template;
    assert_eq!(t.container_spec.mounts.len(), 1);
    assert_eq!(t.resources.limits.memory_bytes, 64 << 20);
    assert_eq!(t.resources.limits.nano_cpus, 500_000_000);
}

#[test]
fn session_affinity_flags() {
    let f = |client_ip, timeout_ns| AffinityFlags {
        client_ip,
        timeout_ns,
    };
    let vip = EndpointMode::Vip;
    let none = SessionAffinity::None;
    let on = |t| SessionAffinity::ClientIp { timeout_s: t };
    // client-ip alone: Kubernetes' three hours.
    assert_eq!(
        session_affinity(none, f(Some(true), None), vip).unwrap(),
        on(10_800)
    );
    assert_eq!(
        session_affinity(none, f(Some(true), Some(90_000_000_000)), vip).unwrap(),
        on(90)
    );
    // An update keeps what it is not told to change.
    assert_eq!(
        session_affinity(on(90), f(None, None), vip).unwrap(),
        on(90)
    );
    assert_eq!(
        session_affinity(on(90), f(Some(true), None), vip).unwrap(),
        on(90)
    );
    assert_eq!(
        session_affinity(on(90), f(None, Some(5_000_000_000)), vip).unwrap(),
        on(5)
    );
    assert_eq!(
        session_affinity(on(90), f(Some(false), None), vip).unwrap(),
        none
    );
    // Refusals, each naming the flag to fix.
    for (current, flags, mode, want) in [
        (
            none,
            f(None, Some(5_000_000_000)),
            vip,
            "add --session-affinity client-ip",
        ),
        (
            on(5),
            f(Some(false), Some(5_000_000_000)),
            vip,
            "add --session-affinity client-ip",
        ),
        (
            none,
            f(Some(true), Some(1_500_000_000)),
            vip,
            "whole seconds from 1s to 24h",
        ),
        (
            none,
            f(Some(true), Some(90_000_000_000_000)),
            vip,
            "whole seconds from 1s to 24h",
        ),
        (
            none,
            f(Some(true), None),
            EndpointMode::Dnsrr,
            "use --endpoint-mode vip",
        ),
        (
            on(5),
            f(None, None),
            EndpointMode::Dnsrr,
            "use --endpoint-mode vip",
        ),
    ] {
        let err = session_affinity(current, flags, mode)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn malformed_templates_are_refused_at_create_time() {
    use crate::service::options::SpecEdits;
    let with_hostname = |h: &str| CreateOptions {
        name: "web".into(),
        args: vec!["img".into()],
        edits: SpecEdits {
            hostname: Some(h.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(
        create_plan(&with_hostname("{{.Service.Name}}-{{.Task.Slot}}"), &|_| {
            None
        })
        .is_ok()
    );
    let err = create_plan(&with_hostname("{{.Servce.Name}}"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--hostname: template \"{{.Servce.Name}}\""),
        "{err}"
    );
    let err = create_plan(&with_hostname("{{.Task.Slot"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed"), "{err}");
    let o = CreateOptions {
        name: "web".into(),
        args: vec!["img".into()],
        env: vec!["NODE={{.Node.Hostnme}}".into()],
        ..Default::default()
    };
    assert!(
        create_plan(&o, &|_| None)
            .unwrap_err()
            .to_string()
            .starts_with("--env: ")
    );
}
