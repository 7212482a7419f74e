//! Well-known public stack files, byte for byte as published (sources, commits and licences
//! in `integration/tests/stacks/SOURCES.md`), read and converted as `docker stack deploy`
//! would: the specs carry Docker's fields for their restart policies, labels, mounts with
//! volume options, grace periods, aliases, resources, and the secrets and configs they name.

use super::*;

macro_rules! stack_file {
    ($name:literal) => {
        load::Source {
            name: concat!("stacks/", $name).into(),
            text: include_str!(concat!("../../../integration/tests/stacks/", $name)).into(),
        }
    };
}

fn env(k: &str) -> Option<String> {
    match k {
        "USERNAME" => Some("admin".into()),
        "HASHED_PASSWORD" => Some("$apr1$x$y".into()),
        "DOMAIN" => Some("sys.example.com".into()),
        "EMAIL" => Some("ops@example.com".into()),
        _ => None,
    }
}

fn deploy(stack: &str, src: load::Source) -> (StackPlan, Vec<String>) {
    plan_files(stack, &[src], &env).unwrap_or_else(|e| panic!("{e:#}"))
}

fn service<'a>(p: &'a StackPlan, name: &str) -> &'a CreatePlan {
    p.services
        .iter()
        .find(|s| s.spec.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

#[test]
fn voting_app_2020() {
    let (p, warnings) = deploy("vote", stack_file!("voting-app-2020.yml"));
    assert_eq!(warnings, ["Ignoring unsupported options: depends_on"]);
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["vote_backend", "vote_frontend", "vote_default"]);
    let redis = service(&p, "vote_redis");
    assert_eq!(redis.spec.update_config.parallelism, 2);
    assert_eq!(redis.spec.update_config.delay, 10_000_000_000);
    assert_eq!(
        redis.spec.task_template.restart_policy.condition,
        RestartCondition::OnFailure
    );
    assert_eq!(redis.networks[0].name, "vote_frontend");
    assert_eq!(redis.networks[0].aliases, ["redis"]);
    let db = service(&p, "vote_db");
    let m = &db.spec.task_template.container_spec.mounts[0];
    assert_eq!(
        (m.kind.as_str(), m.source.as_str(), m.target.as_str()),
        ("volume", "vote_db-data", "/var/lib/postgresql/data")
    );
    assert_eq!(
        m.volume_options.as_ref().unwrap().labels[NAMESPACE_LABEL],
        "vote"
    );
    assert!(
        db.spec
            .task_template
            .container_spec
            .env
            .contains(&"POSTGRES_USER=postgres".into())
    );
    let worker = &service(&p, "vote_worker").spec;
    assert_eq!(worker.labels["APP"], "VOTING");
    let rp = &worker.task_template.restart_policy;
    assert_eq!(
        (rp.condition, rp.delay, rp.max_attempts, rp.window),
        (
            RestartCondition::OnFailure,
            10_000_000_000,
            3,
            120_000_000_000
        )
    );
    assert_eq!(
        worker.task_template.placement.constraints,
        ["node.role == manager"]
    );
    let viz = &service(&p, "vote_visualizer").spec;
    assert_eq!(
        viz.task_template.container_spec.stop_grace_period,
        90_000_000_000
    );
    let sock = &viz.task_template.container_spec.mounts[0];
    assert_eq!(
        (sock.kind.as_str(), sock.source.as_str()),
        ("bind", "/var/run/docker.sock")
    );
    let vote = &service(&p, "vote_vote").spec;
    assert_eq!(vote.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(vote.endpoint_spec.ports[0].published_port, 5000);
    assert_eq!(vote.endpoint_spec.ports[0].target_port, 80);
}

#[test]
fn voting_app_today() {
    let (p, warnings) = deploy("vote", stack_file!("voting-app.yml"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(p.services.len() >= 4);
    for s in &p.services {
        let short = s.spec.name.trim_start_matches("vote_");
        assert!(
            s.networks
                .iter()
                .all(|n| n.aliases.iter().any(|a| a == short)),
            "{}: its Compose name on every network",
            s.spec.name
        );
    }
}

#[test]
fn swarmpit_resources_and_global_agent() {
    let (p, warnings) = deploy("swarmpit", stack_file!("swarmpit.yml"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let app = &service(&p, "swarmpit_app").spec;
    let r = &app.task_template.resources;
    assert_eq!(
        (r.limits.nano_cpus, r.limits.memory_bytes),
        (500_000_000, 1024 << 20)
    );
    assert_eq!(
        (r.reservations.nano_cpus, r.reservations.memory_bytes),
        (250_000_000, 512 << 20)
    );
    let hc = app
        .task_template
        .container_spec
        .healthcheck
        .as_ref()
        .unwrap();
    assert_eq!(hc.test, ["CMD", "curl", "-f", "http://localhost:8080"]);
    assert_eq!(
        (hc.interval, hc.timeout, hc.retries),
        (60_000_000_000, 10_000_000_000, 3)
    );
    let sock = &app.task_template.container_spec.mounts[0];
    assert!(sock.read_only);
    assert_eq!(app.endpoint_spec.ports[0].published_port, 888);
    let agent = &service(&p, "swarmpit_agent").spec;
    assert_eq!(agent.mode, ServiceMode::Global {});
    assert_eq!(agent.labels["swarmpit.agent"], "true");
    let db = &service(&p, "swarmpit_db").spec;
    let m = &db.task_template.container_spec.mounts[0];
    assert_eq!(m.source, "swarmpit_db-data");
    assert_eq!(
        m.volume_options
            .as_ref()
            .unwrap()
            .driver_config
            .as_ref()
            .unwrap()
            .name,
        "local"
    );
}

#[test]
fn portainer_agent_stack() {
    let (p, _) = deploy("portainer", stack_file!("portainer-agent-stack.yml"));
    let agent = service(&p, "portainer_agent");
    assert_eq!(agent.spec.mode, ServiceMode::Global {});
    assert_eq!(agent.networks[0].name, "portainer_agent_network");
    assert_eq!(
        agent.networks[0].aliases,
        ["agent"],
        "so tasks.agent resolves"
    );
    assert!(
        agent
            .spec
            .task_template
            .container_spec
            .env
            .contains(&"AGENT_CLUSTER_ADDR=tasks.agent".into())
    );
    let ui = &service(&p, "portainer_portainer").spec;
    assert_eq!(
        ui.task_template.container_spec.args,
        ["-H", "tcp://tasks.agent:9001", "--tlsskipverify"]
    );
    assert_eq!(
        ui.task_template.container_spec.mounts[0].source,
        "portainer_portainer_data"
    );
}

#[test]
fn dogvscat_anchors_logging_dnsrr_and_driver_opts() {
    let (p, _) = deploy("dvc", stack_file!("dogvscat-voting.yml"));
    assert_eq!(p.external, ["proxy"]);
    let redis = &service(&p, "dvc_redis").spec;
    assert_eq!(redis.endpoint_spec.mode, EndpointMode::Dnsrr);
    let log = redis.task_template.log_driver.as_ref().unwrap();
    assert_eq!(
        (log.name.as_str(), log.options["max-size"].as_str()),
        ("", "1m")
    );
    let m = &redis.task_template.container_spec.mounts[0];
    let d = m
        .volume_options
        .as_ref()
        .unwrap()
        .driver_config
        .as_ref()
        .unwrap();
    assert_eq!(
        (d.name.as_str(), d.options["size"].as_str()),
        ("local", "1")
    );
    let vote = &service(&p, "dvc_vote");
    assert_eq!(
        vote.spec.labels["traefik.http.routers.vote.rule"],
        "Host(`vote.dogvs.cat`)"
    );
    let nets: Vec<&str> = vote.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nets, ["dvc_frontend", "proxy"]);
}

#[test]
fn dogvscat_proxy_and_visualizer() {
    let (p, _) = deploy("proxy", stack_file!("dogvscat-proxy.yml"));
    assert!(
        p.networks.iter().any(|n| n.name == "proxy"),
        "name: overrides the prefix"
    );
    let (v, _) = deploy("viz", stack_file!("dogvscat-visualizer.yml"));
    assert_eq!(v.services.len(), 1);
}

#[test]
fn dockerswarm_rocks_traefik_and_portainer() {
    let (p, _) = deploy("traefik", stack_file!("dockerswarm-rocks-traefik-host.yml"));
    let t = &service(&p, "traefik_traefik").spec;
    assert_eq!(
        t.labels["traefik.http.middlewares.admin-auth.basicauth.users"], "admin:$apr1$x$y",
        "variables substituted in labels"
    );
    assert_eq!(
        t.labels["traefik.http.routers.traefik-public-http.rule"],
        "Host(`sys.example.com`)"
    );
    let ports = &t.endpoint_spec.ports;
    assert!(ports.iter().all(|p| p.publish_mode == PublishMode::Host));
    assert_eq!(
        t.task_template
            .container_spec
            .args
            .last()
            .map(String::as_str),
        Some("--api")
    );
    let (p, _) = deploy("portainer", stack_file!("dockerswarm-rocks-portainer.yml"));
    assert!(!p.services.is_empty());
    // Without the variables it needs, the file is refused naming the first one.
    let err = plan_files(
        "traefik",
        &[stack_file!("dockerswarm-rocks-traefik-host.yml")],
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("required variable USERNAME is missing a value: Variable not set"),
        "{err}"
    );
}

/// The files swarmprom's configs name, as its repository has them beside the stack file
/// (stefanprodan/swarmprom at the commit in SOURCES.md: caddy/Caddyfile,
/// dockerd-exporter/Caddyfile, prometheus/rules/swarm_node.rules.yml and
/// swarm_task.rules.yml). They are not copied here; stand-ins are enough to convert, and the
/// end-to-end deploy brings the real ones.
fn swarmprom_files(p: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let p = p.display().to_string();
    for name in [
        "stacks/caddy/Caddyfile",
        "stacks/dockerd-exporter/Caddyfile",
        "stacks/prometheus/rules/swarm_node.rules.yml",
        "stacks/prometheus/rules/swarm_task.rules.yml",
    ] {
        if p.ends_with(name) {
            return Ok(format!("# stand-in for {name}\n").into_bytes());
        }
    }
    Err(std::io::ErrorKind::NotFound.into())
}

#[test]
fn swarmprom_configs_from_files_beside_the_stack() {
    let (p, _) = plan_files_reading(
        "mon",
        &[stack_file!("swarmprom.yml")],
        &env,
        &swarmprom_files,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = p.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mon_caddy_config",
            "mon_dockerd_config",
            "mon_node_rules",
            "mon_task_rules"
        ]
    );
    assert!(p.configs.iter().all(|c| c.labels[NAMESPACE_LABEL] == "mon"));
    assert_eq!(
        p.configs[0].data,
        b"# stand-in for stacks/caddy/Caddyfile\n"
    );
    assert!(p.secrets.is_empty());
    let targets = |svc: &str| -> Vec<(String, String, u32)> {
        service(&p, svc)
            .spec
            .task_template
            .container_spec
            .configs
            .iter()
            .map(|r| {
                let f = r.file.as_ref().unwrap();
                (r.config_name.clone(), f.name.clone(), f.mode)
            })
            .collect()
    };
    assert_eq!(
        targets("mon_caddy"),
        [(
            "mon_caddy_config".to_string(),
            "/etc/caddy/Caddyfile".to_string(),
            0o444
        )]
    );
    let prom: Vec<String> = targets("mon_prometheus")
        .into_iter()
        .map(|(n, t, _)| format!("{n} {t}"))
        .collect();
    assert_eq!(
        prom,
        [
            "mon_node_rules /etc/prometheus/swarm_node.rules.yml",
            "mon_task_rules /etc/prometheus/swarm_task.rules.yml"
        ]
    );
    // Without the files, deploy stops at the first one, naming it and the stack file.
    let err = plan_files("mon", &[stack_file!("swarmprom.yml")], &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("stacks/swarmprom.yml: config caddy_config: file /"),
        "{err}"
    );
    assert!(
        err.contains("stacks/caddy/Caddyfile: No such file or directory"),
        "{err}"
    );
}

#[test]
fn atsea_shop_uses_external_secrets_by_their_own_names() {
    let (p, _) = deploy("atsea", stack_file!("atsea-shop.yml"));
    assert!(p.secrets.is_empty(), "external secrets are not created");
    let refs = |svc: &str| -> Vec<String> {
        service(&p, svc)
            .spec
            .task_template
            .container_spec
            .secrets
            .iter()
            .map(|r| format!("{} {}", r.secret_name, r.file.as_ref().unwrap().name))
            .collect()
    };
    assert_eq!(
        refs("atsea_reverse_proxy"),
        ["revprox_cert revprox_cert", "revprox_key revprox_key"]
    );
    assert_eq!(
        refs("atsea_database"),
        ["postgres_password postgres_password"]
    );
    assert_eq!(
        refs("atsea_appserver"),
        ["postgres_password postgres_password"]
    );
    assert_eq!(
        refs("atsea_payment_gateway"),
        ["staging_token payment_token"]
    );
}

/// Mangled Compose files (public stacks with bytes flipped, lines dropped, repeated or cut,
/// YAML tokens inserted) are read and converted, or refused with a message; never a panic.
#[test]
fn mangled_compose_files_are_refused_or_converted_never_a_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0_4905e);
    let files = [
        stack_file!("voting-app-2020.yml"),
        stack_file!("swarmpit.yml"),
        stack_file!("portainer-agent-stack.yml"),
        stack_file!("dogvscat-voting.yml"),
        stack_file!("dockerswarm-rocks-traefik-host.yml"),
    ];
    let tokens = [
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "&a ",
        "*a",
        "<<: *a\n",
        "${",
        "$$",
        "\"",
        "'",
        "\t",
        "\n  ",
        "\n",
        "!!str ",
        "? ",
        "|\n",
        ">-\n",
        "~",
        "0x",
        "1e999",
        "-1",
        "99999999999999999999",
    ];
    let (mut converted, mut refused) = (0, 0);
    for round in 0..1500 {
        let base = &files[rng.random_range(0..files.len())];
        let mut lines: Vec<String> = base.text.lines().map(String::from).collect();
        for _ in 0..rng.random_range(1..4) {
            if lines.is_empty() {
                break;
            }
            let i = rng.random_range(0..lines.len());
            match rng.random_range(0..5) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                2 => {
                    let l = &mut lines[i];
                    let cut = rng.random_range(0..=l.len());
                    let cut = (0..=cut)
                        .rev()
                        .find(|c| l.is_char_boundary(*c))
                        .unwrap_or(0);
                    l.truncate(cut);
                }
                3 => {
                    let l = &mut lines[i];
                    let at = (0..=rng.random_range(0..=l.len()))
                        .rev()
                        .find(|c| l.is_char_boundary(*c))
                        .unwrap_or(0);
                    l.insert_str(at, tokens[rng.random_range(0..tokens.len())]);
                }
                _ => {
                    let mut bytes = std::mem::take(&mut lines[i]).into_bytes();
                    if !bytes.is_empty() {
                        let j = rng.random_range(0..bytes.len());
                        bytes[j] = rng.random_range(0x20..0x7f);
                    }
                    lines[i] = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
        }
        let src = load::Source {
            name: base.name.clone(),
            text: lines.join("\n"),
        };
        let result = std::panic::catch_unwind(|| plan_files("fuzz", &[src], &env));
        match result {
            Err(_) => panic!("round {round}: a mangled {} panicked", base.name),
            Ok(Ok(_)) => converted += 1,
            Ok(Err(e)) => {
                refused += 1;
                assert!(
                    !format!("{e:#}").trim().is_empty(),
                    "round {round}: an empty error"
                );
            }
        }
    }
    assert!(
        converted > 0 && refused > 0,
        "{converted} converted, {refused} refused"
    );
}
