//! `shoal service logs`: task output from every node, `--tail`, `--follow`, and relayed by a
//! manager that is not the leader.

use shoal_integration::{LocalCluster, bin_dir, eventually};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn ok(c: &LocalCluster, i: usize, args: &[&str]) -> String {
    let out = c.shoal(i, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_logs_gather_output_from_every_node() {
    let c = LocalCluster::start(3, 171).expect("start daemons");
    let ip = |i: usize| c.nodes[i].ip.clone();
    ok(
        &c,
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip(0),
            "--listen-addr",
            &format!("{}:2377", ip(0)),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    for (i, role) in [(1, "manager"), (2, "worker")] {
        let token = ok(&c, 0, &["swarm", "join-token", "-q", role])
            .trim()
            .to_string();
        ok(
            &c,
            i,
            &[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &ip(i),
                "--listen-addr",
                &format!("{}:2377", ip(i)),
                &c.nodes[0].grpc_addr(),
            ],
        );
    }
    // Spreading needs every node ready when the tasks are placed.
    eventually(Duration::from_secs(20), "3 ready nodes", || async {
        (ok(&c, 0, &["node", "ls"]).matches("Ready").count() == 3).then_some(())
    })
    .await
    .unwrap();
    // Three tasks spread over the nodes; each prints three lines, then one every 200 ms.
    ok(
        &c,
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "talk",
            "--replicas",
            "3",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i-slot$SHOAL_TASK_SLOT; done; while true; do echo tick-slot$SHOAL_TASK_SLOT; sleep 0.2; done",
        ],
    );
    eventually(
        Duration::from_secs(20),
        "3 running tasks on 3 nodes",
        || async {
            let ps = ok(&c, 0, &["service", "ps", "talk"]);
            let nodes = ["node-1", "node-2", "node-3"]
                .iter()
                .filter(|n| ps.contains(*n))
                .count();
            (ok(&c, 0, &["service", "ls"]).contains("3/3") && nodes == 3).then_some(())
        },
    )
    .await
    .unwrap();

    let all = eventually(
        Duration::from_secs(10),
        "every slot's first lines",
        || async {
            let out = ok(&c, 0, &["service", "logs", "talk"]);
            (1..=3)
                .all(|s| out.contains(&format!("line1-slot{s}")))
                .then_some(out)
        },
    )
    .await
    .unwrap();
    let first = all.lines().find(|l| l.contains("line1-slot1")).unwrap();
    assert!(first.starts_with("talk.1."), "Docker's prefix: {first}");
    assert!(
        first.contains("@node-") && first.contains("    | line1-slot1"),
        "{first}"
    );

    // --tail 1: one line per task, and the same through the other manager (not the leader).
    for i in [0, 1] {
        let out = ok(&c, i, &["service", "logs", "--tail", "1", "talk"]);
        assert_eq!(out.lines().count(), 3, "manager {i}: {out}");
    }
    let e = c.shoal(2, &["service", "logs", "talk"]);
    assert!(!e.status.success(), "a worker can't read service logs");

    // --follow keeps delivering new lines.
    let mut follow = Command::new(bin_dir().join("shoal"))
        .args([
            "-H",
            &c.nodes[0].host(),
            "service",
            "logs",
            "--follow",
            "--tail",
            "0",
            "talk",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(6)
            .collect::<Vec<String>>()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let lines = reader.join().unwrap();
    assert_eq!(lines.len(), 6, "followed lines: {lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("tick-slot")),
        "only new lines: {lines:?}"
    );
}
