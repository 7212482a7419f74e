//! The Docker executor on the 3-node testbed with the machine's real engine: image services
//! run as containers on the overlay, reachable through their VIP and name from a container
//! on every node and through the published port on every node; names resolve inside
//! containers; native and container tasks on one network talk both ways; a container killed
//! with `docker kill` is replaced and its address leaves LB and DNS; a restarted shoald
//! keeps its containers serving. Spec fields reach the container as Docker's swarm executor
//! puts them (checked with `docker inspect`); a missing image is pulled from a registry (a
//! real one on 127.0.0.1), and a failed pull names the image and the registry's answer.

use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{TEST_IMAGE as IMAGE, Testbed, require_docker, require_root};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// The test image with `STOPSIGNAL SIGUSR1` (scripts/test-image.sh builds both).
const STOPSIGNAL_IMAGE: &str = "shoal-test-busybox:stopsignal";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers of a service: container id by the node (1-based) whose shoald owns it.
fn containers(bed: &Testbed, service_id: &str) -> BTreeMap<usize, Vec<String>> {
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, n) in bed.nodes.iter().enumerate() {
        let owner = shoal_agent::netns::Sandboxes::new(&n.dir.join("state"))
            .prefix()
            .to_string();
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.shoal.owner={owner}"),
            "--filter",
            &format!("label=com.shoal.service.id={service_id}"),
        ]);
        for id in ids.split_whitespace() {
            out.entry(i + 1).or_default().push(id.to_string());
        }
    }
    out
}

/// `n` HTTP requests from inside a container to `host:port` with busybox nc; the answers.
fn http_from(container: &str, host: &str, port: u16, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | tail -1; done"
    );
    docker(&["exec", container, "sh", "-c", &script])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Addresses busybox nslookup gives for `name` inside a container.
fn lookup(container: &str, name: &str) -> BTreeSet<String> {
    docker(&["exec", container, "nslookup", name])
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(40), f);
}

fn service_id(h: &str, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&shoal(h, &["service", "inspect", name])).unwrap();
    v[0]["ID"].as_str().unwrap().to_string()
}

#[test]
fn containers_get_the_same_networking_as_native_tasks() {
    if !require_root("containers_get_the_same_networking_as_native_tasks")
        || !require_docker("containers_get_the_same_networking_as_native_tasks")
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::up("shdk", 3, 1, root.path()).unwrap();
    let outside = bed.outside_client("out", "198.18.0.201").unwrap();
    let h = bed.nodes[0].host();
    let node = serde_json::from_str::<serde_json::Value>(&shoal(&h, &["node", "inspect", "self"]))
        .unwrap();
    assert_eq!(node[0]["Description"]["Executor"], "docker");
    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.95.0/24",
            "app",
        ],
    );
    // Each replica answers with its task id; a bind mount and limits pass through.
    let shared = root.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("motd"), "from the host\n").unwrap();
    let mount = format!(
        "type=bind,source={},target=/shared,readonly",
        shared.display()
    );
    let web_args = [
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "app",
        "--publish",
        "8080:80",
        "--env",
        "GREETING=hello",
        "--mount",
        &mount,
        "--limit-memory",
        "64M",
        "--limit-cpu",
        "0.5",
        IMAGE,
        "sh",
        "-c",
        "cat /shared/motd; echo $GREETING $SHOAL_TASK_ID > /www/index.html; exec httpd -f -p 80 -h /www",
    ];
    shoal(&h, &web_args);
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "client",
            "--mode",
            "global",
            "--network",
            "app",
            IMAGE,
            "sleep",
            "100000",
        ],
    );
    // A native task on the same network.
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "plain",
            "--network",
            "app",
            "python3",
            "-c",
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',8000)); s.listen()\nwhile True:\n    c,a=s.accept(); c.recv(100); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nnative '+a[0].encode()+b'\\n'); c.close()",
        ],
    );
    let web_id = service_id(&h, "web");
    let client_id = service_id(&h, "client");
    eventually("3 web containers and a client container per node", || {
        containers(&bed, &web_id)
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 3
            && containers(&bed, &client_id).len() == 3
    });
    let clients = containers(&bed, &client_id);
    let one = containers(&bed, &web_id)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    let inspect: serde_json::Value = serde_json::from_str(&docker(&["inspect", &one])).unwrap();
    let hc = &inspect[0]["HostConfig"];
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Mounts"][0]["Type"], "bind");
    assert_eq!(hc["Mounts"][0]["Source"], shared.display().to_string());
    assert_eq!(hc["Mounts"][0]["Target"], "/shared");
    assert_eq!(hc["Mounts"][0]["ReadOnly"], true);
    assert_eq!(
        inspect[0]["Config"]["Labels"]["com.shoal.service.id"],
        web_id.as_str()
    );
    eventually("the containers' output in service logs", || {
        shoal(&h, &["service", "logs", "web"])
            .matches("from the host")
            .count()
            == 3
    });
    let task_ids = |h: &str| -> BTreeSet<String> {
        shoal(h, &["service", "ps", "-q", "--no-trunc", "web"])
            .lines()
            .map(str::to_string)
            .collect()
    };

    // Through the VIP, by name, from a container on every node: every replica answers.
    let web_vip = {
        let v: serde_json::Value =
            serde_json::from_str(&shoal(&h, &["service", "inspect", "web"])).unwrap();
        v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    for (n, ids) in &clients {
        let c = &ids[0];
        eventually(&format!("node {n}: every replica through the VIP"), || {
            let seen: BTreeSet<String> = http_from(c, "web", 80, 24)
                .iter()
                .filter_map(|l| l.strip_prefix("hello ").map(str::to_string))
                .collect();
            let running = task_ids(&h);
            seen.len() == 3
                && seen
                    .iter()
                    .all(|t| running.iter().any(|r| r.starts_with(t.as_str())))
        });
        assert_eq!(
            lookup(c, "web"),
            [web_vip.clone()].into(),
            "web from node {n}"
        );
        assert_eq!(lookup(c, "tasks.web").len(), 3, "tasks.web from node {n}");
        let resolv = docker(&["exec", c, "cat", "/etc/resolv.conf"]);
        assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    }
    // The published port answers on every node, from outside the cluster.
    for i in 0..3 {
        let addr = bed.nodes[i].addr.clone();
        eventually(&format!("port 8080 on node {}", i + 1), || {
            let code = format!(
                "import urllib.request\nprint(urllib.request.urlopen('http://{addr}:8080/', timeout=3).read().decode())"
            );
            let out = Command::new("ip")
                .args(["netns", "exec", &outside, "python3", "-c", &code])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).starts_with("hello ")
        });
    }
    // Native and container tasks on one network, both ways.
    let c1 = &clients[&1][0];
    let from_container = http_from(c1, "plain", 8000, 1);
    assert!(
        from_container
            .first()
            .is_some_and(|l| l.starts_with("native 198.19.95.")),
        "container -> native: {from_container:?}"
    );
    let native_pid = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", "s.bind\\(\\('0.0.0.0',8000\\)\\)"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .to_string();
    let code = format!(
        "import urllib.request\nprint(urllib.request.urlopen('http://{web_vip}/', timeout=3).read().decode())"
    );
    let out = Command::new("nsenter")
        .args(["-t", &native_pid, "-n", "python3", "-c", &code])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("hello "),
        "native -> container: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `docker kill`: the task is replaced and its address leaves LB and DNS.
    let victim = containers(&bed, &web_id)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    let victim_ip = docker(&[
        "exec",
        &victim,
        "sh",
        "-c",
        "ip -4 -o addr show dev eth0 | awk '{print $4}'",
    ])
    .trim()
    .split('/')
    .next()
    .unwrap()
    .to_string();
    docker(&["kill", &victim]);
    eventually(
        "the killed container replaced and out of LB and DNS",
        || {
            let all = containers(&bed, &web_id);
            let names = lookup(c1, "tasks.web");
            all.values().map(Vec::len).sum::<usize>() == 3
                && !all.values().flatten().any(|c| c == &victim)
                && names.len() == 3
                && !names.contains(&victim_ip)
                && http_from(c1, "web", 80, 12).len() == 12
        },
    );

    // A restarted shoald keeps its containers, and they keep serving.
    let before = containers(&bed, &web_id);
    let (worker, kept) = before
        .iter()
        .find(|(n, _)| **n > 1)
        .map(|(n, c)| (*n, c.clone()))
        .expect("a web container on a worker");
    let shoald = shoal_integration::bin_dir().join("shoald");
    bed.restart(worker - 1, &shoald, &[]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = containers(&bed, &web_id);
    assert_eq!(
        after.get(&worker),
        Some(&kept),
        "node {worker}'s containers adopted, not replaced"
    );
    let cw = &clients[&worker][0];
    eventually(
        &format!("node {worker} still balancing after its restart"),
        || {
            let seen: BTreeSet<String> = http_from(cw, "web", 80, 24).into_iter().collect();
            seen.len() == 3
        },
    );

    // A health check gates the LB and DNS: resolvable only once healthy; a container that
    // turns unhealthy is killed and replaced.
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "gated",
            "--network",
            "app",
            "--health-cmd",
            "test -f /tmp/ready",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "20s",
            IMAGE,
            "sh",
            "-c",
            "sleep 3; touch /tmp/ready; exec sleep 100000",
        ],
    );
    let gated_id = service_id(&h, "gated");
    eventually("the gated container started", || {
        !containers(&bed, &gated_id).is_empty()
    });
    let started = Instant::now();
    let first = containers(&bed, &gated_id)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(
            lookup(c1, "tasks.gated").is_empty(),
            "an unhealthy-yet task is not in DNS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually("healthy: running and in DNS", || {
        lookup(c1, "tasks.gated").len() == 1
            && shoal(&h, &["service", "ps", "gated"]).contains("Running")
    });
    docker(&["exec", &first, "rm", "/tmp/ready"]);
    eventually("the unhealthy container replaced", || {
        let now = containers(&bed, &gated_id);
        shoal(&h, &["service", "ps", "--no-trunc", "gated"]).contains("health check failed")
            && !now.values().flatten().any(|c| c == &first)
    });

    // A container killed for its memory limit is reported as such.
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "hog",
            "--limit-memory",
            "8M",
            "--restart-condition",
            "none",
            IMAGE,
            "sh",
            "-c",
            "x=$(head -c 30000000 /dev/zero | tr '\\0' a)",
        ],
    );
    eventually("the OOM kill reported", || {
        shoal(&h, &["service", "ps", "--no-trunc", "hog"]).contains("exceeding its memory limit")
    });

    // An image's STOPSIGNAL is what stops its containers (SIGUSR1 here, not SIGTERM).
    let out = tempfile::tempdir().unwrap();
    let stop_mount = format!("type=bind,source={},target=/out", out.path().display());
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "quitter",
            "--mount",
            &stop_mount,
            STOPSIGNAL_IMAGE,
            "sh",
            "-c",
            "trap 'echo usr1 > /out/stopped; exit 0' USR1; trap 'echo term > /out/stopped; exit 0' TERM; touch /out/started; while :; do sleep 0.2; done",
        ],
    );
    eventually("the STOPSIGNAL container started", || {
        out.path().join("started").exists()
    });
    shoal(&h, &["service", "rm", "quitter"]);
    eventually("the container stopped by its image's signal", || {
        std::fs::read_to_string(out.path().join("stopped")).is_ok_and(|s| s.trim() == "usr1")
    });

    // The Docker engine restarted: its containers die with it (no live-restore here). Every
    // node notices, and the services come back in new containers that serve again.
    let before: BTreeSet<String> = containers(&bed, &web_id).into_values().flatten().collect();
    restart_engine();
    shoal_integration::wait_until(
        "3 new web containers and a new client per node after the engine restart",
        Duration::from_secs(90),
        || {
            let now: BTreeSet<String> = containers(&bed, &web_id).into_values().flatten().collect();
            now.len() == 3 && now.is_disjoint(&before) && containers(&bed, &client_id).len() == 3
        },
    );
    let client = containers(&bed, &client_id)
        .into_values()
        .flatten()
        .next()
        .unwrap();
    eventually("the new replicas answer through the VIP", || {
        let seen: BTreeSet<String> = http_from(&client, "web", 80, 24)
            .iter()
            .filter_map(|l| l.strip_prefix("hello ").map(str::to_string))
            .collect();
        seen.len() == 3
    });
}

/// Stops dockerd and starts it again with the same command line (this machine's engine
/// has no supervisor to do it), returning once it answers.
#[expect(
    clippy::zombie_processes,
    reason = "the new dockerd outlives the test, as the one it replaces would have"
)]
fn restart_engine() {
    // Where systemd supervises the engine, it restarts it (and would race a second one).
    let systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "docker"])
        .status()
        .is_ok_and(|s| s.success());
    if systemd {
        let ok = Command::new("systemctl")
            .args(["restart", "docker"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "systemctl restart docker failed");
        return;
    }
    let pid = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-x", "dockerd"])
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .next()
    .expect("a running dockerd")
    .parse::<i32>()
    .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    shoal_integration::wait_until("dockerd stopped", Duration::from_secs(60), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let log = std::fs::File::create("/tmp/shoal-test-dockerd.log").unwrap();
    use std::os::unix::process::CommandExt;
    Command::new(&args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("starting dockerd again");
    shoal_integration::wait_until("dockerd answering again", Duration::from_secs(60), || {
        Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
    });
}

/// Sends one cluster request to the daemon at `host` (for spec fields the CLI does not
/// have flags for yet).
fn control(
    host: &str,
    req: shoal_api::control::ControlRequest,
) -> Result<shoal_api::control::ControlResponse, String> {
    use shoal_api::local::{LocalRequest, LocalResponse};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = shoal_api::client::connect_local(host)
            .await
            .map_err(|e| e.to_string())?;
        match shoal_api::client::call_local(&mut c, &LocalRequest::Control(req)).await {
            Ok(LocalResponse::Control(r)) => Ok(r),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(s) => Err(s.message().to_string()),
        }
    })
}

fn create_service(host: &str, spec: serde_json::Value) {
    let spec = serde_json::from_value(spec).expect("a service spec");
    control(
        host,
        shoal_api::control::ControlRequest::ServiceCreate {
            spec,
            registry_auth: None,
        },
    )
    .expect("service create");
}

fn inspect(id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
    v[0].clone()
}

/// Removes the Docker volumes a test made, by name, also when it fails.
struct VolumesGuard(Vec<String>);

impl Drop for VolumesGuard {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

#[test]
fn container_spec_fields_reach_the_container() {
    let test = "container_spec_fields_reach_the_container";
    if !require_root(test) || !require_docker(test) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let volume = "shxf-data-shaped";
    let _volumes = VolumesGuard(vec![volume.to_string()]);
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", volume])
        .output();
    let bed = Testbed::up_with("shxf", 1, 1, root.path(), &["--dataplane", "nftables"]).unwrap();
    let h = bed.nodes[0].host();
    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.96.0/24",
            "shaped-net",
        ],
    );
    let net: serde_json::Value =
        serde_json::from_str(&shoal(&h, &["network", "inspect", "shaped-net"])).unwrap();
    let net_id = net[0]["ID"].as_str().unwrap().to_string();
    // A local volume with driver options: a bind of a host directory, so what one task
    // writes is seen by the next one and by the test.
    let backing = root.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::set_permissions(
        &backing,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    create_service(
        &h,
        serde_json::json!({
            "Name": "shaped",
            "Labels": {},
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {
                "Runtime": "docker",
                "Networks": [{"Target": net_id}],
                "ContainerSpec": {
                    "Image": IMAGE,
                    "Args": ["sh", "-c", "echo \"$WHO\" >> /data/who; exec sleep 100000"],
                    "Labels": {"app": "shaped"},
                    "Hostname": "{{.Service.Name}}-{{.Task.Slot}}",
                    "Env": ["WHO={{.Service.Name}}.{{.Task.Slot}} on {{.Node.Hostname}}"],
                    "Dir": "/work",
                    "User": "1000:1000",
                    "Init": true,
                    "StopSignal": "SIGUSR1",
                    "ReadOnly": true,
                    "Mounts": [
                        {"Type": "tmpfs", "Target": "/scratch",
                         "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}},
                        {"Type": "volume", "Source": "shxf-data-{{.Service.Name}}", "Target": "/data",
                         "VolumeOptions": {"Labels": {"made-by": "shoal-test"},
                            "DriverConfig": {"Name": "local", "Options": {
                                "type": "none", "o": "bind", "device": backing.display().to_string()}}}},
                        {"Type": "volume", "Target": "/anon"}
                    ],
                    "Hosts": ["198.18.0.250 db.internal db"],
                    "DNSConfig": {"Nameservers": ["198.18.0.253"], "Search": ["corp.test"], "Options": ["timeout:2"]},
                    "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "80"},
                    "CapabilityAdd": ["NET_ADMIN"],
                    "CapabilityDrop": ["MKNOD"],
                    "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}]
                },
                "Resources": {"Limits": {"Pids": 64}},
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}}
            }
        }),
    );
    let svc = service_id(&h, "shaped");
    eventually("two shaped containers", || {
        containers(&bed, &svc).values().map(Vec::len).sum::<usize>() == 2
    });
    let ids: Vec<String> = containers(&bed, &svc).into_values().flatten().collect();
    let mut hostnames = BTreeSet::new();
    for id in &ids {
        let i = inspect(id);
        let (c, hc) = (&i["Config"], &i["HostConfig"]);
        hostnames.insert(c["Hostname"].as_str().unwrap().to_string());
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["WorkingDir"], "/work");
        assert_eq!(c["StopSignal"], "SIGUSR1");
        assert_eq!(c["Labels"]["app"], "shaped");
        assert_eq!(c["Labels"]["com.docker.swarm.service.name"], "shaped");
        assert_eq!(c["Labels"]["com.docker.swarm.service.id"], svc.as_str());
        assert!(
            c["Labels"]["com.docker.swarm.task.name"]
                .as_str()
                .unwrap()
                .starts_with("shaped."),
            "{}",
            c["Labels"]
        );
        assert_eq!(hc["ReadonlyRootfs"], true);
        assert_eq!(hc["Init"], true);
        assert_eq!(hc["PidsLimit"], 64);
        assert_eq!(hc["CapAdd"][0], "NET_ADMIN");
        assert_eq!(hc["CapDrop"][0], "MKNOD");
        assert_eq!(hc["Sysctls"]["net.ipv4.ip_unprivileged_port_start"], "80");
        assert_eq!(hc["Ulimits"][0]["Name"], "nofile");
        assert_eq!(hc["Ulimits"][0]["Soft"], 512);
        assert_eq!(hc["Ulimits"][0]["Hard"], 1024);
        assert_eq!(hc["LogConfig"]["Type"], "json-file");
        assert_eq!(hc["LogConfig"]["Config"]["max-size"], "1m");
        assert_eq!(hc["ExtraHosts"][0], "db.internal:198.18.0.250");
        assert_eq!(hc["DnsSearch"][0], "corp.test");
        let mounts = hc["Mounts"].as_array().unwrap();
        let tmpfs = mounts.iter().find(|m| m["Target"] == "/scratch").unwrap();
        assert_eq!(tmpfs["Type"], "tmpfs");
        assert_eq!(tmpfs["TmpfsOptions"]["SizeBytes"], 1_048_576);
        let vol = mounts.iter().find(|m| m["Target"] == "/data").unwrap();
        assert_eq!(
            vol["Source"], volume,
            "the mount source's template expanded"
        );
        // What the container itself sees.
        let inside = |cmd: &str| docker(&["exec", id, "sh", "-c", cmd]);
        assert_eq!(inside("id -u").trim(), "1000");
        assert_eq!(inside("pwd").trim(), "/work");
        assert!(
            inside("touch /x 2>&1; echo $?").trim().ends_with('1'),
            "read-only root"
        );
        assert_eq!(inside("touch /scratch/x && echo ok").trim(), "ok");
        assert!(inside("cat /etc/hosts").contains("198.18.0.250\tdb.internal"));
        let resolv = inside("cat /etc/resolv.conf");
        assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
        assert!(!resolv.contains("198.18.0.253"), "{resolv}");
        assert!(resolv.contains("search corp.test"), "{resolv}");
        assert!(resolv.contains("timeout:2"), "{resolv}");
        // The container's own process (not the `docker exec` shell, whose limits the engine
        // sets for the exec: once seen at 1024 on a loaded CI machine).
        let limits = inside("grep 'Max open files' /proc/1/limits");
        assert_eq!(
            limits.split_whitespace().collect::<Vec<_>>()[3..5],
            ["512", "1024"],
            "{limits}"
        );
    }
    assert_eq!(
        hostnames,
        ["shaped-1".to_string(), "shaped-2".to_string()].into(),
        "hostnames from the template, one per slot"
    );
    // One named volume, made once with the mount's driver options and labels, shared by
    // both tasks; each wrote its expanded env into it.
    let vols = docker(&["volume", "ls", "-q", "--filter", &format!("name={volume}")]);
    assert_eq!(vols.split_whitespace().collect::<Vec<_>>(), [volume]);
    let v: serde_json::Value =
        serde_json::from_str(&docker(&["volume", "inspect", volume])).unwrap();
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Options"]["o"], "bind");
    assert_eq!(v[0]["Labels"]["made-by"], "shoal-test");
    let created = v[0]["CreatedAt"].clone();
    eventually("both tasks wrote into the volume", || {
        let who = std::fs::read_to_string(backing.join("who")).unwrap_or_default();
        who.contains("shaped.1 on ") && who.contains("shaped.2 on ")
    });
    // A replacement task reuses the volume rather than making it again.
    docker(&["kill", &ids[0]]);
    eventually("the killed task replaced", || {
        let now: Vec<String> = containers(&bed, &svc).into_values().flatten().collect();
        now.len() == 2 && !now.contains(&ids[0])
    });
    let v: serde_json::Value =
        serde_json::from_str(&docker(&["volume", "inspect", volume])).unwrap();
    assert_eq!(v[0]["CreatedAt"], created, "the volume was reused");
    // Anonymous volumes go with their containers.
    let anon = inspect(&ids[1])["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/anon")
        .map(|m| m["Name"].as_str().unwrap().to_string())
        .expect("an anonymous volume");
    shoal(&h, &["service", "rm", "shaped"]);
    eventually("the anonymous volume removed with its container", || {
        docker(&["volume", "ls", "-q"])
            .split_whitespace()
            .all(|v| v != anon)
    });
}

/// A real registry (Debian's `docker-registry`) on 127.0.0.1, with its storage in a temp
/// dir; killed on drop, also on panic, with the image tags the test pushed to it.
struct Registry {
    child: std::process::Child,
    port: u16,
    tags: Vec<String>,
    /// With basic auth: the Docker config dir (a temp one, never the host's ~/.docker)
    /// that `docker login` wrote the credentials to, which pushes use.
    docker_config: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// None (with the reason) when the package is missing.
    fn start() -> Result<Registry, String> {
        Registry::start_with(None)
    }

    /// With `auth`, the registry wants that user and password (htpasswd, bcrypt), and a
    /// temp Docker config holds them after a `docker login`.
    fn start_with(auth: Option<(&str, &str)>) -> Result<Registry, String> {
        let bin = "/usr/bin/docker-registry";
        if !std::path::Path::new(bin).exists() {
            return Err(
                "docker-registry is not installed (scripts/install-deps.sh installs it)".into(),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let mut auth_config = String::new();
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(|e| {
                    format!("htpasswd (apache2-utils; scripts/install-deps.sh installs it): {e}")
                })?;
            if !out.status.success() {
                return Err(format!(
                    "htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth_config = format!(
                "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                file.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_config}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        let docker_config = auth.map(|_| dir.path().join("docker-config"));
        let reg = Registry {
            child,
            port,
            tags: Vec::new(),
            docker_config,
            _dir: dir,
        };
        shoal_integration::wait_until("the registry listening", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let (Some((user, password)), Some(config)) = (auth, reg.docker_config.clone()) {
            std::fs::create_dir_all(&config).unwrap();
            let mut login = Command::new("docker")
                .arg("--config")
                .arg(&config)
                .args(["login", &format!("127.0.0.1:{port}"), "-u", user])
                .arg("--password-stdin")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            login
                .stdin
                .take()
                .unwrap()
                .write_all(password.as_bytes())
                .unwrap();
            let out = login.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "docker login: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(reg)
    }

    fn name(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}", self.port)
    }

    /// Pushes a local image under `repo` and takes the tag off the engine again.
    fn push(&mut self, local: &str, repo: &str) -> String {
        let name = self.name(repo);
        self.tags.push(name.clone());
        for args in [
            vec!["tag", local, &name],
            vec!["push", "-q", &name],
            vec!["rmi", &name],
        ] {
            let mut docker = Command::new("docker");
            if let Some(config) = &self.docker_config {
                docker.arg("--config").arg(config);
            }
            let out = docker.args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        name
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for t in &self.tags {
            let _ = Command::new("docker").args(["rmi", t]).output();
        }
    }
}

#[test]
fn missing_images_are_pulled_and_a_failed_pull_says_why() {
    let test = "missing_images_are_pulled_and_a_failed_pull_says_why";
    if !require_root(test) || !require_docker(test) {
        return;
    }
    let mut registry = match Registry::start() {
        Ok(r) => r,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why}, and CI=true does not allow skipping")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            return;
        }
    };
    let image = registry.push(IMAGE, "shxp/pulled:v1");
    assert!(
        !Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .unwrap()
            .status
            .success(),
        "{image} is not on the engine before the task runs"
    );
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up_with("shxp", 1, 1, root.path(), &["--dataplane", "nftables"]).unwrap();
    let h = bed.nodes[0].host();
    shoal(
        &h,
        &[
            "service", "create", "--name", "pulled", &image, "sleep", "100000",
        ],
    );
    let svc = service_id(&h, "pulled");
    eventually("the pulled image's task running", || {
        !containers(&bed, &svc).is_empty()
            && shoal(&h, &["service", "ps", "pulled"]).contains("Running")
    });
    assert!(
        Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .unwrap()
            .status
            .success(),
        "{image} pulled onto the engine"
    );
    let log = std::fs::read_to_string(bed.nodes[0].dir.join("shoald.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("pulling image {image}")),
        "the pull is announced: {log}"
    );
    // A name the registry does not have: the task fails with the registry's answer.
    let nope = registry.name("shxp/nope");
    shoal(
        &h,
        &[
            "service",
            "create",
            "--name",
            "nope",
            "--restart-condition",
            "none",
            &nope,
            "sleep",
            "1",
        ],
    );
    let want = format!("pulling {nope}:latest: ");
    eventually("the failed pull reported", || {
        let ps = shoal(&h, &["service", "ps", "--no-trunc", "nope"]);
        ps.contains(&want) && ps.contains("manifest unknown")
    });
}

/// Every file under `dir`, as bytes (raft logs and snapshots are binary).
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn with_registry_auth_the_nodes_pull_from_a_private_registry() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let test = "with_registry_auth_the_nodes_pull_from_a_private_registry";
    if !require_root(test) || !require_docker(test) {
        return;
    }
    let (user, password) = ("shoal-tester", "Pa55-w0rd-only-in-this-test");
    let mut registry = match Registry::start_with(Some((user, password))) {
        Ok(r) => r,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why}, and CI=true does not allow skipping")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            return;
        }
    };
    let image = registry.push(IMAGE, "shxa/private:v1");
    // Another repository for the stack: its manifest needs credentials too.
    let stacked = registry.push(IMAGE, "shxa/stacked:v1");
    let docker_config = registry.docker_config.clone().unwrap();
    let root = tempfile::tempdir().unwrap();
    // Two managers: the second gets the cluster data key when it joins.
    let bed = Testbed::up_with("shxa", 2, 2, root.path(), &["--dataplane", "nftables"]).unwrap();
    let h = bed.nodes[0].host();
    let cli = |args: &[&str], config: Option<&std::path::Path>| {
        let mut c = Command::new(shoal_integration::bin_dir().join("shoal"));
        c.arg("-H").arg(&h).args(args);
        match config {
            Some(dir) => c.env("DOCKER_CONFIG", dir),
            // Not the host's ~/.docker either: an empty config dir.
            None => c.env("DOCKER_CONFIG", root.path()),
        };
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "shoal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Without the flag the nodes pull anonymously, and the registry says no.
    cli(
        &[
            "service",
            "create",
            "--name",
            "anon",
            "--restart-condition",
            "none",
            &image,
            "sleep",
            "100000",
        ],
        None,
    );
    eventually("the anonymous pull refused", || {
        let ps = shoal(&h, &["service", "ps", "--no-trunc", "anon"]);
        ps.contains(&format!("pulling {image}: "))
            && (ps.contains("no basic auth credentials") || ps.contains("unauthorized"))
    });
    shoal(&h, &["service", "rm", "anon"]);

    // With it, the CLI's credentials for 127.0.0.1:PORT reach the node and the pull works.
    let stderr = cli(
        &[
            "service",
            "create",
            "--name",
            "private",
            "--with-registry-auth",
            &image,
            "sleep",
            "100000",
        ],
        Some(&docker_config),
    );
    assert!(!stderr.contains("no credentials"), "{stderr}");
    let svc = service_id(&h, "private");
    eventually("the private image's task running", || {
        !containers(&bed, &svc).is_empty()
            && shoal(&h, &["service", "ps", "private"]).contains("Running")
    });
    // stack deploy: each service gets the credentials of its image's registry.
    let compose = root.path().join("compose.yml");
    std::fs::write(
        &compose,
        format!("services:\n  web:\n    image: {stacked}\n    command: [\"sleep\", \"100000\"]\n"),
    )
    .unwrap();
    cli(
        &[
            "stack",
            "deploy",
            "--with-registry-auth",
            "-c",
            compose.to_str().unwrap(),
            "shxa",
        ],
        Some(&docker_config),
    );
    eventually("the stack's private image running", || {
        shoal(&h, &["service", "ps", "shxa_web"]).contains("Running")
    });

    // Without credentials in the config the CLI says so and goes on.
    let stderr = cli(
        &[
            "service",
            "update",
            "--with-registry-auth",
            "--label-add",
            "x=y",
            "private",
        ],
        None,
    );
    assert!(
        stderr.contains(&format!("no credentials for 127.0.0.1:{}", registry.port)),
        "{stderr}"
    );
    let inspect = shoal(&h, &["service", "inspect", "private"]);

    // Neither raft logs nor snapshots of any manager, nor inspect, hold the secret in any
    // form the CLI sent it in.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let header =
        shoal_api::registry_auth::RegistryAuth::encode(&shoal_api::registry_auth::Credentials {
            username: user.into(),
            password: password.into(),
            serveraddress: format!("127.0.0.1:{}", registry.port),
            ..Default::default()
        });
    let secrets = [password, basic.as_str(), header.as_str()];
    for s in secrets {
        assert!(!inspect.contains(s), "service inspect shows {s}");
    }
    let mut keys = Vec::new();
    for n in &bed.nodes {
        let state = n.dir.join("state");
        let files = files_under(&state.join("raft"));
        assert!(
            files.iter().any(|(_, b)| contains(b, b"SetRegistryAuth")),
            "{}: the sealed credentials went through raft",
            n.name
        );
        for (path, bytes) in &files {
            for s in secrets {
                assert!(
                    !contains(bytes, s.as_bytes()),
                    "{} holds a registry secret in the clear",
                    path.display()
                );
            }
        }
        let key = state.join("keys").join("swarm-data.key");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        keys.push(std::fs::read(&key).unwrap());
    }
    assert_eq!(
        keys[0], keys[1],
        "the joined manager got the cluster's data key"
    );
    let _ = Command::new("docker").args(["rmi", &image]).output();
}
