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
    let log_path = c.nodes[0]
        .dir
        .join("state/tasks")
        .join(&task.task.id)
        .join("output.log");
    let output = eventually(Duration::from_secs(10), "the task's output", || async {
        let s = std::fs::read_to_string(&log_path).ok()?;
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
