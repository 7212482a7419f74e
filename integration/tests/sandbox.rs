//! Native tasks run in their own network and mount namespaces, with 127.0.0.11 as their
//! resolver, and nothing of them stays after the task is gone.

use shoal_api::control::{ControlRequest as C, ControlResponse as R};
use shoal_integration::testbed::require_root;
use shoal_integration::{LocalCluster, eventually};
use std::process::Command;
use std::time::Duration;

fn netns_list() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_tasks_get_their_own_namespaces_and_resolver() {
    if !require_root("native_tasks_get_their_own_namespaces_and_resolver") {
        return;
    }
    let c = LocalCluster::start(1, 161).expect("start daemon");
    let ip = c.nodes[0].ip.clone();
    let ok = |args: &[&str]| {
        let out = c.shoal(0, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &ip,
        "--listen-addr",
        &format!("{ip}:2377"),
        "--default-addr-pool",
        "198.19.0.0/16",
    ]);
    ok(&[
        "service",
        "create",
        "--runtime",
        "native",
        "--name",
        "probe",
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo netns=$(readlink /proc/self/ns/net); exec sleep 600",
    ]);
    let task = eventually(Duration::from_secs(20), "the running task", || async {
        let R::Tasks(t) = c
            .control(
                0,
                C::TaskList {
                    service: Some("probe".into()),
                    node: None,
                },
            )
            .await
            .ok()?
        else {
            return None;
        };
        t.into_iter()
            .find(|t| t.task.status.state == shoal_api::objects::TaskState::Running)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
    let task_dir = c.nodes[0].dir.join("state/tasks").join(&task.task.id);
    let output = eventually(Duration::from_secs(10), "the task's output", || async {
        let s = shoal_integration::task_output(&task_dir)?;
        s.contains("netns=").then_some(s)
    })
    .await
    .unwrap();
    assert!(
        output.contains("nameserver 127.0.0.11"),
        "resolver inside the task: {output}"
    );
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let task_ns = output
        .lines()
        .find_map(|l| l.strip_prefix("netns="))
        .unwrap();
    assert_ne!(
        task_ns,
        host_ns.to_string_lossy(),
        "the task has its own network namespace"
    );
    let short = &task.task.id[..12];
    assert!(
        netns_list().contains(short),
        "named namespace of the task: {}",
        netns_list()
    );

    ok(&["service", "rm", "probe"]);
    eventually(
        Duration::from_secs(20),
        "the namespace gone with the task",
        || async { (!netns_list().contains(short)).then_some(()) },
    )
    .await
    .unwrap();
}

/// The output of the first task of `service` once it holds `marker`, or its error.
async fn task_outcome(c: &LocalCluster, service: &str, marker: &str) -> Result<String, String> {
    use shoal_api::objects::TaskState;
    eventually(
        Duration::from_secs(20),
        &format!("the outcome of {service}"),
        || async {
            let R::Tasks(t) = c
                .control(
                    0,
                    C::TaskList {
                        service: Some(service.into()),
                        node: None,
                    },
                )
                .await
                .ok()?
            else {
                return None;
            };
            let t = t.into_iter().next()?.task;
            if t.status.state == TaskState::Rejected || t.status.state == TaskState::Failed {
                return Some(Err(t.status.err));
            }
            let dir = c.nodes[0].dir.join("state/tasks").join(&t.id);
            let s = shoal_integration::task_output(&dir)?;
            s.contains(marker).then_some(Ok(s))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_tasks_get_local_volumes_dir_and_user() {
    let test = "native_tasks_get_local_volumes_dir_and_user";
    if !require_root(test) {
        return;
    }
    let c = LocalCluster::start(1, 221).expect("start daemon");
    let ip = c.nodes[0].ip.clone();
    let out = c.shoal(
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mount targets are made on the host's filesystem: keep them in the test's dir.
    let target = c.root().join("mnt/data");
    let spec = |name: &str, user: &str, script: &str, volume: serde_json::Value| {
        serde_json::from_value(serde_json::json!({
            "Name": name,
            "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {
                "Runtime": "native",
                "RestartPolicy": {"Condition": "none", "Delay": 0},
                "ContainerSpec": {
                    "Command": ["sh", "-c", script],
                    "User": user,
                    "Dir": "/tmp",
                    "Env": ["WHO={{.Task.Slot}}"],
                    "DNSConfig": {"Search": ["corp.test"]},
                    "Hosts": ["198.18.0.250 db.internal"],
                    "Mounts": [volume]
                }
            }
        }))
        .unwrap()
    };
    let volume = serde_json::json!({"Type": "volume", "Source": "shxn-data", "Target": target.display().to_string()});
    // A root task writes into the volume; a second one, as nobody, reads it back.
    let t = target.display();
    let writer = spec(
        "writer",
        "",
        &format!("echo written-$WHO > {t}/file; echo wrote; exec sleep 600"),
        volume.clone(),
    );
    c.control(
        0,
        C::ServiceCreate {
            spec: writer,
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let out = task_outcome(&c, "writer", "wrote").await.unwrap();
    assert!(out.contains("wrote"), "{out}");
    let dir = c.nodes[0].dir.join("state/volumes/shxn-data");
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).unwrap(),
        "written-1\n",
        "the volume is a directory in the state dir, the env's template expanded"
    );
    assert!(
        !target.join("file").exists(),
        "the mount lives in the task's own mount namespace only"
    );
    let reader = spec(
        "reader",
        "nobody",
        &format!(
            "echo uid=$(id -u) pwd=$(pwd) read=$(cat {t}/file); grep -c corp.test /etc/resolv.conf; grep db.internal /etc/hosts; echo done; exec sleep 600"
        ),
        volume,
    );
    c.control(
        0,
        C::ServiceCreate {
            spec: reader,
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let out = task_outcome(&c, "reader", "done").await.unwrap();
    assert!(
        out.contains("uid=65534 pwd=/tmp read=written-1"),
        "user, dir and the reused volume: {out}"
    );
    assert!(
        out.contains("198.18.0.250 db.internal"),
        "extra hosts: {out}"
    );
    // A volume with a driver option cannot be a directory: refused by name.
    let refused = spec(
        "nfs",
        "",
        "echo never",
        serde_json::json!({"Type": "volume", "Source": "shxn-nfs", "Target": "/mnt/nfs",
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "nfs"}}}}),
    );
    c.control(
        0,
        C::ServiceCreate {
            spec: refused,
            registry_auth: None,
        },
    )
    .await
    .unwrap();
    let err = task_outcome(&c, "nfs", "never").await.unwrap_err();
    assert!(
        err.contains("volume shxn-nfs at /mnt/nfs") && err.contains("driver options"),
        "{err}"
    );
    assert!(!c.nodes[0].dir.join("state/volumes/shxn-nfs").exists());
}
