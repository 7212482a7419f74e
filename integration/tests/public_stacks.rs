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
