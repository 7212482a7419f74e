use super::*;

const FILE: &str = r#"
version: "3.8"
services:
  web:
    image: shoal-test-busybox
    command: httpd -f -p 80 -h /www
    deploy:
      replicas: 3
      endpoint_mode: vip
      placement:
        constraints: [node.role==worker]
      update_config:
        parallelism: 2
        delay: 5s
        order: start-first
    ports:
      - "8080:80"
      - target: 53
        published: 5353
        protocol: udp
        mode: host
    networks:
      front:
        aliases: [www]
    environment:
      MODE: prod
      WORKERS: 4
    healthcheck:
      test: ["CMD", "nc", "-z", "localhost", "80"]
      interval: 2s
      retries: 3
  worker:
    command: ["sleep", "1000"]
    deploy:
      mode: global
networks:
  front:
    driver: overlay
    attachable: true
    ipam:
      config:
        - subnet: 198.19.60.0/24
"#;

fn planned(text: &str) -> Result<StackPlan> {
    planned_with(text, &|_| None).map(|(p, _)| p)
}

fn planned_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(StackPlan, Vec<String>)> {
    let src = load::Source {
        name: "/srv/shop/stack.yml".into(),
        text: text.into(),
    };
    plan_files("shop", &[src], env)
}

#[test]
fn a_stack_prefixes_names_and_labels_everything() {
    let p = planned(FILE).unwrap();
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    // `worker` has no networks: it gets the stack's default network, as in Docker.
    assert_eq!(names, ["shop_front", "shop_default"]);
    let front = &p.networks[0];
    assert!(front.attachable);
    assert_eq!(front.ipam_options.configs[0].subnet, "198.19.60.0/24");
    assert_eq!(front.labels[NAMESPACE_LABEL], "shop");

    let web = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_web")
        .unwrap()
        .spec;
    assert_eq!(web.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 3 });
    let t = &web.task_template;
    assert_eq!(t.runtime, Runtime::Docker);
    assert_eq!(t.container_spec.image, "shoal-test-busybox");
    assert_eq!(
        t.container_spec.args,
        ["httpd", "-f", "-p", "80", "-h", "/www"]
    );
    assert!(t.container_spec.env.contains(&"WORKERS=4".to_string()));
    assert_eq!(t.placement.constraints, ["node.role==worker"]);
    assert_eq!(web.update_config.parallelism, 2);
    assert_eq!(web.update_config.delay, 5_000_000_000);
    assert_eq!(web.update_config.order, UpdateOrder::StartFirst);
    let ports = &web.endpoint_spec.ports;
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().any(|p| p.published_port == 5353
        && p.protocol == Protocol::Udp
        && p.publish_mode == PublishMode::Host));
    let hc = t.container_spec.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test[0], "CMD");
    assert_eq!(hc.interval, 2_000_000_000);
    let web_plan = p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_web")
        .unwrap();
    assert_eq!(web_plan.networks[0].name, "shop_front");
    assert_eq!(
        web_plan.networks[0].aliases,
        ["www", "web"],
        "the Compose name is an alias too"
    );

    let worker = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_worker")
        .unwrap();
    assert_eq!(worker.spec.task_template.runtime, Runtime::Native);
    assert_eq!(worker.spec.mode, ServiceMode::Global {});
    assert_eq!(worker.networks[0].name, "shop_default");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text =
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: 2\n      replicaz: 3\n";
    let err = planned(text).unwrap_err().to_string();
    assert!(
        err.starts_with("/srv/shop/stack.yml:6:7: unknown key \"replicaz\" in services.web.deploy"),
        "{err}"
    );
    assert!(err.contains("allowed here: mode, replicas"), "{err}");
    let text = "services:\n  web:\n    image: x\nsecrets:\n  s:\n    filee: s.txt\n";
    let err = planned(text).unwrap_err().to_string();
    assert!(
        err.starts_with("/srv/shop/stack.yml:6:5: unknown key \"filee\" in secrets.s"),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_service() {
    for (text, want) in [
        (
            "services:\n  web:\n    deploy:\n      replicas: 2\n",
            "service web: needs an image",
        ),
        (
            "services:\n  web:\n    image: x\n    networks: [nope]\n",
            "network \"nope\" is not declared",
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"70000:80\"]\n",
            "service web:",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      mode: daemonset\n",
            "deploy.mode",
        ),
        (
            "services:\n  web:\n    image: x\n    networks: [n]\nnetworks:\n  n:\n    driver: bridge\n",
            "driver \"bridge\" is not supported",
        ),
        ("version: \"2\"\nservices: {}\n", "format 3"),
    ] {
        let err = planned(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}

const RICH: &str = r#"
version: "3.9"
x-logging: &logging
  driver: json-file
  options:
    max-size: "10m"
services:
  db:
    image: postgres:${PG_TAG:-16}
    environment:
      - POSTGRES_USER=app
      - FROM_SHELL
      - UNSET_ONE
    env_file: [db.env]
    volumes:
      - db-data:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
      - type: tmpfs
        target: /run/cache
        tmpfs:
          size: 64m
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    hostname: "db-{{.Task.Slot}}"
    user: "999:999"
    working_dir: /var/lib/postgresql
    labels:
      com.example.role: database
    logging: *logging
    ulimits:
      nofile:
        soft: 20000
        hard: 40000
      nproc: 65535
    sysctls:
      net.core.somaxconn: 1024
    cap_add: [SYS_NICE]
    cap_drop: [ALL]
    extra_hosts:
      - "metrics.local:198.18.0.9"
    dns: [198.18.0.53]
    dns_search: corp.example
    dns_opt: ["ndots:2"]
    init: true
    read_only: true
    tty: true
    stdin_open: true
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U app"]
      interval: 10s
      timeout: 5s
      retries: 5
      start_period: 30s
      start_interval: 1s
    deploy:
      mode: replicated
      replicas: 1
      labels: [com.example.tier=data]
      endpoint_mode: dnsrr
      placement:
        constraints: [node.role == manager]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 1
      resources:
        limits:
          cpus: '0.50'
          memory: 512M
          pids: 200
        reservations:
          cpus: '0.25'
          memory: 128M
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 120s
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 60s
        max_failure_ratio: 0.3
        order: start-first
      rollback_config:
        parallelism: 0
        failure_action: continue
    networks:
      back:
        aliases: [postgres]
    build: ./db
    depends_on: [cache]
  cache:
    image: redis:alpine
    restart: on-failure:4
    networks: [back, outside]
volumes:
  db-data:
    driver: local
    driver_opts:
      type: tmpfs
      device: tmpfs
      o: "size=100m"
    labels:
      backup: nightly
networks:
  back:
    driver: overlay
    driver_opts:
      encrypted: ""
    internal: true
    ipam:
      config:
        - subnet: 198.19.61.0/24
          gateway: 198.19.61.254
  outside:
    external:
      name: shared-net
"#;

#[test]
fn the_swarm_subset_converts_as_docker_stack_deploy_does() {
    let env = |k: &str| match k {
        "FROM_SHELL" => Some("yes".to_string()),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("db.env"),
        "# comment\nPOSTGRES_DB=shop\nPOSTGRES_USER=overridden\n",
    )
    .unwrap();
    let file = dir.path().join("stack.yml");
    let src = load::Source {
        name: file.display().to_string(),
        text: RICH.into(),
    };
    let (p, warnings) = plan_files("shop", &[src], &env).unwrap();
    assert_eq!(
        warnings,
        ["Ignoring unsupported options: build, depends_on, restart"],
        "a variable with a default is not reported unset"
    );
    assert_eq!(p.external, ["shared-net"]);
    let back = &p.networks[0];
    assert_eq!(back.name, "shop_back");
    assert!(back.internal);
    assert_eq!(back.driver_configuration.options["encrypted"], "");
    assert_eq!(back.ipam_options.configs[0].gateway, "198.19.61.254");
    let db = p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_db")
        .unwrap();
    let s = &db.spec;
    assert_eq!(s.labels["com.example.tier"], "data");
    assert_eq!(s.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(s.endpoint_spec.mode, EndpointMode::Dnsrr);
    let t = &s.task_template;
    let cs = &t.container_spec;
    assert_eq!(cs.image, "postgres:16");
    assert_eq!(
        cs.env,
        ["FROM_SHELL=yes", "POSTGRES_DB=shop", "POSTGRES_USER=app"],
        "env_file first, environment wins, an unset bare key left out"
    );
    assert_eq!(cs.stop_grace_period, 90_000_000_000);
    assert_eq!(cs.stop_signal, "SIGINT");
    assert_eq!(cs.hostname, "db-{{.Task.Slot}}");
    assert_eq!(
        (cs.user.as_str(), cs.dir.as_str()),
        ("999:999", "/var/lib/postgresql")
    );
    assert_eq!(cs.labels["com.example.role"], "database");
    assert_eq!(cs.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(t.log_driver.as_ref().unwrap().name, "json-file");
    assert_eq!(t.log_driver.as_ref().unwrap().options["max-size"], "10m");
    let nofile = cs.ulimits.iter().find(|u| u.name == "nofile").unwrap();
    assert_eq!((nofile.soft, nofile.hard), (20000, 40000));
    assert_eq!(cs.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(cs.capability_add, ["CAP_SYS_NICE"]);
    assert_eq!(cs.capability_drop, ["ALL"]);
    assert_eq!(cs.hosts, ["198.18.0.9 metrics.local"]);
    let dns = cs.dns_config.as_ref().unwrap();
    assert_eq!(
        (
            dns.nameservers.len(),
            dns.search[0].as_str(),
            dns.options[0].as_str()
        ),
        (1, "corp.example", "ndots:2")
    );
    assert_eq!(
        (cs.init, cs.read_only, cs.tty, cs.open_stdin),
        (Some(true), true, true, true)
    );
    let hc = cs.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD-SHELL", "pg_isready -U app"]);
    assert_eq!(
        (hc.retries, hc.start_period, hc.start_interval),
        (5, 30_000_000_000, 1_000_000_000)
    );
    // Mounts: the named volume scoped to the stack with its driver options and labels, the
    // relative bind resolved against the file's directory, the tmpfs with its size.
    let data = &cs.mounts[0];
    assert_eq!(
        (data.kind.as_str(), data.source.as_str()),
        ("volume", "shop_db-data")
    );
    let vo = data.volume_options.as_ref().unwrap();
    assert_eq!(vo.labels["backup"], "nightly");
    assert_eq!(vo.labels[NAMESPACE_LABEL], "shop");
    let d = vo.driver_config.as_ref().unwrap();
    assert_eq!(
        (d.name.as_str(), d.options["o"].as_str()),
        ("local", "size=100m")
    );
    let init = &cs.mounts[1];
    assert_eq!(init.kind, "bind");
    assert_eq!(init.source, dir.path().join("init").display().to_string());
    assert!(init.read_only);
    assert_eq!(
        cs.mounts[2].tmpfs_options.as_ref().unwrap().size_bytes,
        64 << 20
    );
    let r = &t.resources;
    assert_eq!(
        (r.limits.nano_cpus, r.limits.memory_bytes, r.limits.pids),
        (500_000_000, 512 << 20, 200)
    );
    assert_eq!(
        (r.reservations.nano_cpus, r.reservations.memory_bytes),
        (250_000_000, 128 << 20)
    );
    let rp = &t.restart_policy;
    assert_eq!(rp.condition, RestartCondition::OnFailure);
    assert_eq!(
        (rp.delay, rp.max_attempts, rp.window),
        (5_000_000_000, 3, 120_000_000_000)
    );
    assert_eq!(t.placement.constraints, ["node.role == manager"]);
    assert_eq!(t.placement.max_replicas, 1);
    assert_eq!(
        t.placement.preferences[0].spread.spread_descriptor,
        "node.labels.zone"
    );
    let u = &s.update_config;
    assert_eq!(
        (u.parallelism, u.delay, u.monitor),
        (2, 10_000_000_000, 60_000_000_000)
    );
    assert_eq!(
        (u.failure_action, u.max_failure_ratio, u.order),
        (FailureAction::Rollback, Ratio(0.3), UpdateOrder::StartFirst)
    );
    let rb = s.rollback_config.as_ref().unwrap();
    assert_eq!(
        (rb.parallelism, rb.failure_action),
        (0, FailureAction::Continue)
    );
    assert_eq!(db.networks[0].name, "shop_back");
    assert_eq!(db.networks[0].aliases, ["postgres", "db"]);

    let cache = p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_cache")
        .unwrap();
    let rp = &cache.spec.task_template.restart_policy;
    assert_eq!(
        (rp.condition, rp.max_attempts),
        (RestartCondition::OnFailure, 4),
        "from restart:"
    );
    let nets: Vec<(&str, &[String])> = cache
        .networks
        .iter()
        .map(|n| (n.name.as_str(), n.aliases.as_slice()))
        .collect();
    assert_eq!(
        nets,
        [
            ("shop_back", &["cache".to_string()][..]),
            ("shared-net", &["cache".to_string()][..])
        ]
    );
}

#[test]
fn only_used_networks_are_made_and_an_empty_list_means_default() {
    let p = planned("services:\n  web:\n    image: x\n    networks: []\nnetworks:\n  spare: {}\n  gone:\n    external: true\n").unwrap();
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["shop_default"]);
    assert!(
        p.external.is_empty(),
        "an unused external network is not looked for"
    );
    assert_eq!(p.services[0].networks[0].name, "shop_default");
}

#[test]
fn a_healthcheck_without_test_keeps_the_images_with_new_timings() {
    let p = planned("services:\n  web:\n    image: x\n    healthcheck:\n      interval: 30s\n      retries: 5\n").unwrap();
    let hc = p.services[0]
        .spec
        .task_template
        .container_spec
        .healthcheck
        .clone()
        .unwrap();
    assert!(hc.test.is_empty());
    assert_eq!((hc.interval, hc.retries), (30_000_000_000, 5));
}

#[test]
fn refusals_name_the_key_and_the_fix() {
    for (text, want) in [
        (
            "services:\n  web:\n    image: x\n    deploy:\n      mode: replicated-job\n",
            "jobs are not supported",
        ),
        (
            "services:\n  web:\n    image: x\n    networks:\n      n:\n        ipv4_address: 198.19.1.5\nnetworks:\n  n: {}\n",
            "ipv4_address/ipv6_address cannot be set in swarm mode",
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [\"data:/d\"]\n",
            "volume \"data\" is not declared",
        ),
        (
            "services:\n  web:\n    volumes: [\"data:/d\"]\n    command: sleep 1\nvolumes:\n  data:\n    driver_opts: {type: nfs}\n",
            "a native task gets a local directory",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      resources:\n        reservations:\n          generic_resources: []\n",
            "generic_resources and devices",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      mode: global\n      replicas: 2\n",
            "deploy.replicas cannot be used with mode: global",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      update_config:\n        max_failure_ratio: 2\n",
            "max_failure_ratio 2: use a fraction",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      resources:\n        limits: {memory: 64M}\n        reservations: {memory: 1G}\n",
            "memory reservation is above its limit",
        ),
    ] {
        let err = planned(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}

const FILES: &str = r#"
version: "3.8"
services:
  web:
    image: nginx
    secrets:
      - db_password
      - source: tls_key
        target: /etc/ssl/key.pem
        uid: '101'
        gid: '101'
        mode: 0400
      - source: token
        target: api_token
    configs:
      - site
      - source: app_conf
        target: /etc/app/app.conf
        mode: ${CONF_MODE}
  worker:
    command: ["sleep", "1000"]
    secrets: [legacy]
secrets:
  db_password:
    file: ./db_password.txt
    labels:
      com.example.kind: password
  tls_key:
    file: certs/../certs/key.pem
    name: shared_tls_key
  token:
    environment: API_TOKEN
  legacy:
    external:
      name: old_secret
  spare:
    external: true
configs:
  site:
    file: ${CONF_DIR}/site.conf
    template_driver: golang
  app_conf:
    external: true
    name: app-conf-v2
"#;

fn files_env(k: &str) -> Option<String> {
    match k {
        "API_TOKEN" => Some("t0ken".into()),
        // docker/cli casts a mode from a variable as a decimal number: 288 is 0440.
        "CONF_MODE" => Some("288".into()),
        "CONF_DIR" => Some("./conf".into()),
        _ => None,
    }
}

/// A stack file in a fresh directory with the files it names.
fn stack_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

fn planned_in(
    dir: &tempfile::TempDir,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(StackPlan, Vec<String>)> {
    let src = load::Source {
        name: dir.path().join("stack.yml").display().to_string(),
        text: text.into(),
    };
    plan_files("shop", &[src], env)
}

#[test]
fn secrets_and_configs_convert_as_docker_stack_deploy_does() {
    let dir = stack_dir(&[
        ("db_password.txt", b"hunter2\n"),
        ("certs/key.pem", b"-----BEGIN KEY-----\n"),
        ("conf/site.conf", b"server_name {{.Service.Name}};\n"),
    ]);
    let (p, warnings) = planned_in(&dir, FILES, &files_env).unwrap();
    assert_eq!(
        warnings,
        ["WARN: secret legacy: secret.external.name is deprecated in favor of secret.name"]
    );
    // Every declared secret that is not external is made, named `<stack>_<key>` unless
    // `name:` says otherwise, labelled with the stack; external ones are not.
    let made: Vec<(&str, &[u8])> = p
        .secrets
        .iter()
        .map(|s| (s.spec.name.as_str(), s.data.as_slice()))
        .collect();
    assert_eq!(
        made,
        [
            ("shop_db_password", &b"hunter2\n"[..]),
            ("shared_tls_key", b"-----BEGIN KEY-----\n"),
            ("shop_token", b"t0ken"),
        ]
    );
    let db = &p.secrets[0].spec;
    assert_eq!(db.labels["com.example.kind"], "password");
    assert_eq!(db.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(p.secrets[1].spec.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(p.configs.len(), 1);
    let site = &p.configs[0];
    assert_eq!(site.name, "shop_site");
    assert_eq!(site.data, b"server_name {{.Service.Name}};\n");
    assert_eq!(site.templating.as_ref().unwrap().name, "golang");
    assert_eq!(site.labels[NAMESPACE_LABEL], "shop");

    let web = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_web")
        .unwrap()
        .spec
        .task_template
        .container_spec;
    let secrets: Vec<(&str, &str, &str, &str, u32)> = web
        .secrets
        .iter()
        .map(|r| {
            let f = r.file.as_ref().unwrap();
            (
                r.secret_name.as_str(),
                f.name.as_str(),
                f.uid.as_str(),
                f.gid.as_str(),
                f.mode,
            )
        })
        .collect();
    // Sorted by name, as docker/cli sends them; target defaults to the key, owner 0:0,
    // mode 0444; a literal 0400 is octal, as Go's YAML reads it.
    assert_eq!(
        secrets,
        [
            ("shared_tls_key", "/etc/ssl/key.pem", "101", "101", 0o400),
            ("shop_db_password", "db_password", "0", "0", 0o444),
            ("shop_token", "api_token", "0", "0", 0o444),
        ]
    );
    assert!(web.secrets.iter().all(|r| r.secret_id.is_empty()));
    let configs: Vec<(&str, &str, u32)> = web
        .configs
        .iter()
        .map(|r| {
            let f = r.file.as_ref().unwrap();
            (r.config_name.as_str(), f.name.as_str(), f.mode)
        })
        .collect();
    assert_eq!(
        configs,
        [
            ("app-conf-v2", "/etc/app/app.conf", 0o440),
            // docker/cli's default target is the key itself; the task finds it at /site.
            ("shop_site", "site", 0o444),
        ]
    );
    let worker = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_worker")
        .unwrap()
        .spec
        .task_template
        .container_spec;
    assert_eq!(worker.secrets[0].secret_name, "old_secret");
    assert_eq!(worker.secrets[0].file.as_ref().unwrap().name, "legacy");
}

#[test]
fn secret_and_config_mistakes_are_one_line_naming_the_object() {
    let base = "services:\n  web:\n    image: x\n";
    let with = |svc: &str, top: &str| format!("{base}{svc}{top}");
    let dir = stack_dir(&[("s.txt", b"data"), ("empty.txt", b"")]);
    let stack = dir.path().join("stack.yml").display().to_string();
    let cases: Vec<(String, String)> = vec![
        (
            with("    secrets: [nope]\n", ""),
            "service web: undefined secret \"nope\": declare it under the file's top-level secrets:".into(),
        ),
        (
            with("    configs: [nope]\n", "secrets:\n  nope:\n    file: s.txt\n"),
            "service web: undefined config \"nope\"".into(),
        ),
        (
            with("", "secrets:\n  db:\n    file: ./missing.txt\n"),
            format!(
                "{stack}: secret db: file {}: No such file or directory",
                dir.path().join("missing.txt").display()
            ),
        ),
        (
            with("", "secrets:\n  db:\n    file: empty.txt\n"),
            "secret db: file".into(),
        ),
        (
            with("", "secrets:\n  db:\n    environment: NOT_SET\n"),
            "secret db: environment variable NOT_SET is not set".into(),
        ),
        (
            with("", "secrets:\n  db:\n    file: s.txt\n    environment: X\n"),
            "secret db: give file: or environment:, not both".into(),
        ),
        (
            with("", "secrets:\n  db: {}\n"),
            "secret db: give file:".into(),
        ),
        (
            with("", "secrets:\n  db:\n"),
            "secret db: give file:".into(),
        ),
        (
            with("", "secrets:\n  db:\n    driver: vault\n"),
            "secret db: driver \"vault\": shoal has no external secret drivers".into(),
        ),
        (
            with("", "configs:\n  c:\n    content: |\n      port=80\n"),
            "config c: content: is not supported by docker stack deploy".into(),
        ),
        (
            with("", "configs:\n  c:\n    file: s.txt\n    template_driver: jinja\n"),
            "config c: template driver \"jinja\" is unknown; the only one is \"golang\"".into(),
        ),
        (
            with(
                "",
                "secrets:\n  db:\n    name: db\n    external:\n      name: other\n",
            ),
            "secret db: secret.external.name and secret.name conflict; only use secret.name".into(),
        ),
        (
            with("", "secrets:\n  db:\n    name: -db\n    file: s.txt\n"),
            "secret db: invalid secret name \"-db\"".into(),
        ),
        (
            with(
                "",
                "secrets:\n  a:\n    name: same\n    file: s.txt\n  b:\n    name: same\n    file: s.txt\n",
            ),
            "two secrets of the file have the name same".into(),
        ),
        (
            with(
                "    secrets:\n      - a\n      - source: b\n        target: a\n",
                "secrets:\n  a:\n    file: s.txt\n  b:\n    file: s.txt\n",
            ),
            "service web: secret shop_b and shop_a both target /run/secrets/a".into(),
        ),
        (
            with(
                "    secrets:\n      - source: a\n        target: ../../etc/passwd\n",
                "secrets:\n  a:\n    file: s.txt\n",
            ),
            "climbs out of /run/secrets".into(),
        ),
        (
            with(
                "    secrets:\n      - source: a\n        mode: 0999\n",
                "secrets:\n  a:\n    file: s.txt\n",
            ),
            "service web: secret a: mode 0999: give permission bits in octal".into(),
        ),
    ];
    for (text, want) in cases {
        let err = planned_in(&dir, &text, &|_| None).unwrap_err().to_string();
        assert!(err.contains(&want), "{text}\nwant: {want}\n got: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn secret_data_is_size_checked_before_anything_is_sent() {
    let text = "services:\n  web:\n    image: x\nsecrets:\n  big:\n    file: big.bin\n";
    let src = load::Source {
        name: "/srv/shop/stack.yml".into(),
        text: text.into(),
    };
    let read = |p: &std::path::Path| {
        assert_eq!(p, std::path::Path::new("/srv/shop/big.bin"));
        Ok(vec![0u8; shoal_api::secrets::MAX_DATA_SIZE])
    };
    let err = plan_files_reading("shop", std::slice::from_ref(&src), &|_| None, &read)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/srv/shop/stack.yml: secret big: file /srv/shop/big.bin: data is 512000 bytes; a secret must be less than"),
        "{err}"
    );
    // Binary data travels as it is.
    let read = |_: &std::path::Path| Ok(vec![0u8, 0xff, 0x10]);
    let (p, _) = plan_files_reading("shop", &[src], &|_| None, &read).unwrap();
    assert_eq!(p.secrets[0].data.as_slice(), [0u8, 0xff, 0x10]);
}
