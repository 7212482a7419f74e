//! Public stack files, byte for byte as published (`stacks/SOURCES.md` names each one's
//! repository, path and commit), deployed with `shoal stack deploy` on the 3-node testbed
//! with the Docker executor. Their images are the local test image tagged under the names
//! the files use (no registry here). The specs are checked under Docker's field names as
//! `docker stack deploy` would make them, and the named volumes as the nodes' engine made
//! them. Each stack is removed before the next, so the machine holds one at a time.

use serde_json::Value;
use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{TEST_IMAGE as IMAGE, Testbed, require_docker, require_root};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Tags and volumes the test made on the machine's engine, removed on drop.
struct EngineObjects {
    /// The testbed's root: its nodes' containers go before their volumes.
    root: std::path::PathBuf,
    tags: Vec<String>,
    volumes: Vec<String>,
}

impl EngineObjects {
    fn tag(&mut self, name: &str) {
        let o = Command::new("docker")
            .args(["tag", IMAGE, name])
            .output()
            .unwrap();
        assert!(o.status.success(), "docker tag {name}");
        self.tags.push(name.to_string());
    }
}

impl Drop for EngineObjects {
    fn drop(&mut self) {
        // Containers of removed stacks may still be going.
        shoal_integration::remove_containers_under(&self.root);
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
        for t in &self.tags {
            let _ = Command::new("docker").args(["rmi", t]).output();
        }
    }
}

fn inspect(h: &str, service: &str) -> Value {
    let v: Value = serde_json::from_str(&shoal(h, &["service", "inspect", service])).unwrap();
    v[0]["Spec"].clone()
}

fn deploy(h: &str, dir: &Path, file: &str, stack: &str, env: &[(&str, &str)]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/stacks")
        .join(file);
    let dst = dir.join(file);
    std::fs::copy(&src, &dst).unwrap();
    let o = Command::new(shoal_integration::bin_dir().join("shoal"))
        .args([
            "-H",
            h,
            "stack",
            "deploy",
            "-c",
            dst.to_str().unwrap(),
            stack,
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "deploying {file}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn remove(h: &str, stack: &str) {
    shoal(h, &["stack", "rm", stack]);
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(60), f);
}

fn volume_labels(name: &str) -> Option<Value> {
    let o = Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(v[0].clone())
}

#[test]
fn public_stack_files_deploy_with_dockers_specs() {
    if !require_root("public_stack_files_deploy_with_dockers_specs")
        || !require_docker("public_stack_files_deploy_with_dockers_specs")
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shpub", 3, 1, root.path()).unwrap();
    let h = bed.nodes[0].host();
    let mut engine = EngineObjects {
        root: root.path().to_path_buf(),
        tags: vec![],
        volumes: vec![],
    };
    for image in [
        "redis:alpine",
        "postgres:9.4",
        "dockersamples/examplevotingapp_vote:before",
        "dockersamples/examplevotingapp_result:before",
        "dockersamples/examplevotingapp_worker",
        "dockersamples/visualizer:stable",
        "swarmpit/swarmpit:latest",
        "couchdb:2.3.0",
        "influxdb:1.8",
        "swarmpit/agent:latest",
        "portainer/agent",
        "portainer/portainer",
        "postgres:9.6",
        "bretfisher/examplevotingapp_vote",
        "bretfisher/examplevotingapp_result",
        "bretfisher/examplevotingapp_worker:java",
        "traefik:v2.2",
    ] {
        engine.tag(image);
    }
    engine.volumes = [
        "vote_db-data",
        "swarmpit_db-data",
        "swarmpit_influx-data",
        "portainer_portainer_data",
        "dvc_db-data",
        "dvc_redis-data",
        "traefik_traefik-public-certificates",
    ]
    .map(String::from)
    .to_vec();
    for net in ["proxy", "traefik-public"] {
        shoal(&h, &["network", "create", "-d", "overlay", net]);
    }

    // dockersamples/example-voting-app (2020): restart policies, labels, a named volume, a
    // bind mount, a grace period, aliases.
    deploy(&h, root.path(), "voting-app-2020.yml", "vote", &[]);
    let worker = inspect(&h, "vote_worker");
    assert_eq!(worker["Labels"]["APP"], "VOTING");
    assert_eq!(worker["Labels"]["com.docker.stack.namespace"], "vote");
    let rp = &worker["TaskTemplate"]["RestartPolicy"];
    assert_eq!(rp["Condition"], "on-failure");
    assert_eq!(rp["Delay"], 10_000_000_000u64);
    assert_eq!(rp["MaxAttempts"], 3);
    assert_eq!(rp["Window"], 120_000_000_000u64);
    let viz = inspect(&h, "vote_visualizer");
    assert_eq!(
        viz["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        90_000_000_000u64
    );
    assert_eq!(
        viz["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"],
        "/var/run/docker.sock"
    );
    let db = inspect(&h, "vote_db");
    let m = &db["TaskTemplate"]["ContainerSpec"]["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Source"], "vote_db-data");
    assert_eq!(
        m["VolumeOptions"]["Labels"]["com.docker.stack.namespace"],
        "vote"
    );
    let redis = inspect(&h, "vote_redis");
    assert_eq!(
        redis["TaskTemplate"]["Networks"][0]["Aliases"],
        serde_json::json!(["redis"])
    );
    assert_eq!(redis["UpdateConfig"]["Parallelism"], 2);
    // The manager's engine made the named volume for the task, labelled as Docker labels it.
    eventually("vote_db-data exists on the engine", || {
        volume_labels("vote_db-data").is_some_and(|v| {
            v["Labels"]["com.docker.stack.namespace"] == "vote" && v["Driver"] == "local"
        })
    });
    remove(&h, "vote");

    // swarmpit/swarmpit: resource limits and reservations, a health check, a global agent.
    deploy(&h, root.path(), "swarmpit.yml", "swarmpit", &[]);
    let app = inspect(&h, "swarmpit_app");
    let r = &app["TaskTemplate"]["Resources"];
    assert_eq!(r["Limits"]["NanoCPUs"], 500_000_000);
    assert_eq!(r["Limits"]["MemoryBytes"], 1_073_741_824u64);
    assert_eq!(r["Reservations"]["NanoCPUs"], 250_000_000);
    assert_eq!(r["Reservations"]["MemoryBytes"], 536_870_912u64);
    let hc = &app["TaskTemplate"]["ContainerSpec"]["Healthcheck"];
    assert_eq!(
        hc["Test"],
        serde_json::json!(["CMD", "curl", "-f", "http://localhost:8080"])
    );
    assert_eq!(hc["Interval"], 60_000_000_000u64);
    assert!(
        app["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["ReadOnly"]
            .as_bool()
            .unwrap()
    );
    let agent = inspect(&h, "swarmpit_agent");
    assert!(agent["Mode"]["Global"].is_object());
    assert_eq!(agent["Labels"]["swarmpit.agent"], "true");
    remove(&h, "swarmpit");

    // portainer/portainer-compose: a global agent found through tasks.agent.
    deploy(
        &h,
        root.path(),
        "portainer-agent-stack.yml",
        "portainer",
        &[],
    );
    let agent = inspect(&h, "portainer_agent");
    assert_eq!(
        agent["TaskTemplate"]["Networks"][0]["Aliases"],
        serde_json::json!(["agent"])
    );
    assert_eq!(
        agent["TaskTemplate"]["Placement"]["Constraints"],
        serde_json::json!(["node.platform.os == linux"])
    );
    let ui = inspect(&h, "portainer_portainer");
    assert_eq!(
        ui["TaskTemplate"]["ContainerSpec"]["Args"],
        serde_json::json!(["-H", "tcp://tasks.agent:9001", "--tlsskipverify"])
    );
    remove(&h, "portainer");

    // BretFisher/dogvscat: extension fields with anchors and merge keys, logging options,
    // dnsrr, volume driver options, an external network.
    deploy(&h, root.path(), "dogvscat-voting.yml", "dvc", &[]);
    let redis = inspect(&h, "dvc_redis");
    assert_eq!(redis["EndpointSpec"]["Mode"], "dnsrr");
    assert_eq!(
        redis["TaskTemplate"]["LogDriver"]["Options"]["max-size"],
        "1m"
    );
    let m = &redis["TaskTemplate"]["ContainerSpec"]["Mounts"][0];
    assert_eq!(m["VolumeOptions"]["DriverConfig"]["Options"]["size"], "1");
    let vote = inspect(&h, "dvc_vote");
    assert_eq!(
        vote["Labels"]["traefik.http.routers.vote.rule"],
        "Host(`vote.dogvs.cat`)"
    );
    assert_eq!(
        vote["TaskTemplate"]["Networks"].as_array().unwrap().len(),
        2
    );
    remove(&h, "dvc");

    // tiangolo/dockerswarm.rocks: required variables in labels and commands, host-mode
    // ports, an external network.
    deploy(
        &h,
        root.path(),
        "dockerswarm-rocks-traefik-host.yml",
        "traefik",
        &[
            ("USERNAME", "admin"),
            ("HASHED_PASSWORD", "hash"),
            ("DOMAIN", "sys.example.com"),
            ("EMAIL", "ops@example.com"),
        ],
    );
    let t = inspect(&h, "traefik_traefik");
    assert_eq!(
        t["Labels"]["traefik.http.routers.traefik-public-https.rule"],
        "Host(`sys.example.com`)"
    );
    assert_eq!(t["EndpointSpec"]["Ports"][0]["PublishMode"], "host");
    assert!(
        t["TaskTemplate"]["ContainerSpec"]["Args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--certificatesresolvers.le.acme.email=ops@example.com")
    );
    remove(&h, "traefik");
    drop(bed);
}

/// Builds `name` from the test image with `sleep` as its command, for services whose stack
/// file gives none: their containers then stay up to be looked into.
fn sleeper_image(engine: &mut EngineObjects, name: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nCMD [\"sleep\", \"1000000\"]\n"),
    )
    .unwrap();
    let o = Command::new("docker")
        .args(["build", "-q", "-t", name])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker build {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    engine.tags.push(name.to_string());
}

/// The first running container of `service` on the testbed, and what `cat path` prints in it.
fn cat_in_service(bed: &Testbed, service: &str, path: &str) -> Option<String> {
    let h = bed.nodes[0].host();
    let id = shoal(&h, &["service", "inspect", "-f", "{{.ID}}", service]);
    let id = id.trim();
    bed.nodes.iter().find_map(|n| {
        let owner = shoal_agent::netns::Sandboxes::new(&n.dir.join("state"))
            .prefix()
            .to_string();
        let ps = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=com.shoal.owner={owner}"))
            .arg("--filter")
            .arg(format!("label=com.shoal.service.id={id}"))
            .output()
            .ok()?;
        let c = String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .next()?
            .to_string();
        let o = Command::new("docker")
            .args(["exec", &c, "cat", path])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    })
}

#[test]
fn public_stacks_with_configs_and_secrets_give_their_tasks_the_files() {
    let test = "public_stacks_with_configs_and_secrets_give_their_tasks_the_files";
    if !require_root(test) || !require_docker(test) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shpcf", 3, 1, root.path()).unwrap();
    let h = bed.nodes[0].host();
    let mut engine = EngineObjects {
        root: root.path().to_path_buf(),
        tags: vec![],
        volumes: vec![
            "mon_prometheus".into(),
            "mon_grafana".into(),
            "mon_alertmanager".into(),
        ],
    };
    sleeper_image(&mut engine, "stefanprodan/caddy");
    sleeper_image(&mut engine, "dockersamples/atsea_db");
    for image in [
        "google/cadvisor",
        "stefanprodan/swarmprom-grafana:5.3.4",
        "stefanprodan/swarmprom-alertmanager:v0.14.0",
        "cloudflare/unsee:v0.8.0",
        "stefanprodan/swarmprom-node-exporter:v0.16.0",
        "stefanprodan/swarmprom-prometheus:v2.5.0",
        "dockersamples/atseasampleshopapp_reverse_proxy",
        "dockersamples/atsea_app",
        "dockersamples/visualizer:stable",
        "dockersamples/atseasampleshopapp_payment_gateway",
    ] {
        engine.tag(image);
    }

    // stefanprodan/swarmprom: four configs from files beside the stack file.
    let stacks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks");
    let copy = |rel: &str| {
        let dst = root.path().join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(stacks.join("swarmprom").join(rel), &dst).unwrap();
    };
    for rel in [
        "caddy/Caddyfile",
        "dockerd-exporter/Caddyfile",
        "prometheus/rules/swarm_node.rules.yml",
        "prometheus/rules/swarm_task.rules.yml",
    ] {
        copy(rel);
    }
    deploy(&h, root.path(), "swarmprom.yml", "mon", &[]);
    let configs = shoal(&h, &["config", "ls", "--format", "{{.Name}}"]);
    let mut names: Vec<&str> = configs.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mon_caddy_config",
            "mon_dockerd_config",
            "mon_node_rules",
            "mon_task_rules"
        ]
    );
    let caddy = inspect(&h, "mon_caddy");
    let c = &caddy["TaskTemplate"]["ContainerSpec"]["Configs"][0];
    assert_eq!(c["ConfigName"], "mon_caddy_config");
    assert_eq!(c["File"]["Name"], "/etc/caddy/Caddyfile");
    assert!(c["ConfigID"].as_str().is_some_and(|id| !id.is_empty()));
    let want = std::fs::read_to_string(stacks.join("swarmprom/caddy/Caddyfile")).unwrap();
    eventually("mon_caddy's container sees its Caddyfile", || {
        cat_in_service(&bed, "mon_caddy", "/etc/caddy/Caddyfile").as_deref() == Some(&want)
    });
    let want =
        std::fs::read_to_string(stacks.join("swarmprom/dockerd-exporter/Caddyfile")).unwrap();
    eventually("the global dockerd-exporter sees its own Caddyfile", || {
        cat_in_service(&bed, "mon_dockerd-exporter", "/etc/caddy/Caddyfile").as_deref()
            == Some(&want)
    });
    remove(&h, "mon");
    eventually("stack rm removed the stack's configs", || {
        shoal(&h, &["config", "ls", "-q"]).trim().is_empty()
    });

    // dockersamples/atsea-sample-shop-app: external secrets, made beforehand.
    for (name, value) in [
        ("postgres_password", "atsea-db-pw"),
        ("staging_token", "tok"),
        ("revprox_key", "key"),
        ("revprox_cert", "cert"),
    ] {
        let file = root.path().join(name);
        std::fs::write(&file, value).unwrap();
        shoal(&h, &["secret", "create", name, file.to_str().unwrap()]);
    }
    deploy(&h, root.path(), "atsea-shop.yml", "atsea", &[]);
    let db = inspect(&h, "atsea_database");
    let s = &db["TaskTemplate"]["ContainerSpec"]["Secrets"][0];
    assert_eq!(s["SecretName"], "postgres_password");
    assert_eq!(s["File"]["Name"], "postgres_password");
    assert_eq!(s["File"]["Mode"], 0o444);
    eventually(
        "atsea_database reads its password from /run/secrets",
        || {
            cat_in_service(&bed, "atsea_database", "/run/secrets/postgres_password").as_deref()
                == Some("atsea-db-pw")
        },
    );
    remove(&h, "atsea");
    // External secrets are not the stack's: they stay.
    assert_eq!(shoal(&h, &["secret", "ls", "-q"]).lines().count(), 4);
    drop(bed);
}
