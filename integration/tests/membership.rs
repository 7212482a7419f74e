//! Membership through the CLI: promotion and demotion change raft membership, a manager's
//! `swarm leave` gives its seat back, a silent node is marked down and its tasks move, and
//! without quorum writes fail at once while reads answer.

use shoal_integration::{LocalCluster, eventually};
use std::process::Output;
use std::time::{Duration, Instant};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn init(c: &LocalCluster) {
    let ip = &c.nodes[0].ip;
    ok(c.shoal(
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    ));
}

fn join(c: &LocalCluster, i: usize, role: &str) {
    let token = ok(c.shoal(0, &["swarm", "join-token", "-q", role]))
        .trim()
        .to_string();
    let ip = c.nodes[i].ip.clone();
    ok(c.shoal(
        i,
        &[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            &c.nodes[0].grpc_addr(),
        ],
    ));
}

/// `node ls` rows as (hostname, status, manager status).
fn node_rows(c: &LocalCluster, i: usize) -> Option<Vec<(String, String, String)>> {
    let out = c.shoal(i, &["node", "ls"]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = text.lines().next()?;
    let col = |name: &str| header.find(name).unwrap();
    let (host, status, avail, mgr) = (
        col("HOSTNAME"),
        col("STATUS"),
        col("AVAILABILITY"),
        col("MANAGER STATUS"),
    );
    Some(
        text.lines()
            .skip(1)
            .map(|l| {
                let cut =
                    |a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
                (cut(host, status), cut(status, avail), cut(mgr, l.len()))
            })
            .collect(),
    )
}

fn managers(rows: &[(String, String, String)]) -> Vec<String> {
    rows.iter()
        .filter(|r| !r.2.is_empty())
        .map(|r| r.0.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_demote_leave_and_node_down() {
    let mut c = LocalCluster::start(4, 51).expect("start daemons");
    init(&c);
    join(&c, 1, "worker");
    join(&c, 2, "worker");
    join(&c, 3, "manager");
    ok(c.shoal(0, &["swarm", "update", "--dispatcher-heartbeat", "2s"]));

    // Promotion: node-2 becomes a reachable manager and can answer cluster commands.
    ok(c.shoal(0, &["node", "promote", "node-2"]));
    eventually(
        Duration::from_secs(20),
        "node-2 a reachable manager",
        || async {
            let rows = node_rows(&c, 0)?;
            rows.iter()
                .any(|r| r.0 == "node-2" && r.2 == "Reachable")
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(1)));
    eventually(
        Duration::from_secs(20),
        "node-2 serving the cluster API",
        || async {
            c.shoal(1, &["service", "ls"])
                .status
                .success()
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(1)));

    // The cluster data key (which opens sealed registry credentials) went to the promoted
    // node with its manager certificate, and to the manager that joined; never to a worker.
    let key = |i: usize| std::fs::read(c.nodes[i].dir.join("state/keys/swarm-data.key")).ok();
    assert!(key(0).is_some(), "swarm init made the data key");
    assert_eq!(
        key(1),
        key(0),
        "the promoted node-2 has the cluster's data key"
    );
    assert_eq!(key(3), key(0), "node-4, joined as a manager, has it");
    assert_eq!(key(2), None, "the worker node-3 has none");

    // Demotion: node-4 stops being a manager and is refused cluster commands.
    ok(c.shoal(0, &["node", "demote", "node-4"]));
    eventually(Duration::from_secs(20), "node-4 a worker", || async {
        let rows = node_rows(&c, 0)?;
        let out = c.shoal(3, &["service", "ls"]);
        let refused = String::from_utf8_lossy(&out.stderr).contains("not a swarm manager");
        (!managers(&rows).contains(&"node-4".to_string()) && refused).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(3)));
    eventually(
        Duration::from_secs(20),
        "node-4 without the data key",
        || async { key(3).is_none().then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(3)));

    // A service spread over the workers, then a worker goes silent.
    ok(c.shoal(
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "web",
            "--replicas",
            "4",
            "sleep",
            "600",
        ],
    ));
    eventually(Duration::from_secs(20), "4 running tasks", || async {
        let out = ok(c.shoal(0, &["service", "ls"]));
        out.contains("4/4").then_some(())
    })
    .await
    .unwrap();
    c.kill(2);
    let killed = Instant::now();
    eventually(Duration::from_secs(8), "node-3 down", || async {
        let rows = node_rows(&c, 0)?;
        rows.iter()
            .any(|r| r.0 == "node-3" && r.1 == "Down")
            .then_some(())
    })
    .await
    .unwrap();
    println!(
        "node marked down {:?} after SIGKILL (heartbeat 2s)",
        killed.elapsed()
    );
    eventually(
        Duration::from_secs(20),
        "tasks moved off node-3",
        || async {
            let out = ok(c.shoal(0, &["service", "ps", "web"]));
            let running_elsewhere = out
                .lines()
                .filter(|l| l.contains("Running") && !l.contains("node-3") && !l.contains("\\_"))
                .count();
            (running_elsewhere == 4).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", ok(c.shoal(0, &["service", "ps", "web"]))));

    // Draining a node moves its tasks away; the service keeps its 4 running tasks.
    ok(c.shoal(0, &["node", "update", "--availability", "drain", "node-4"]));
    eventually(
        Duration::from_secs(20),
        "tasks moved off the drained node-4",
        || async {
            let out = ok(c.shoal(0, &["service", "ps", "web"]));
            let live: Vec<&str> = out
                .lines()
                // Desired and current state both Running; history rows start with \_.
                .filter(|l| l.matches("Running").count() >= 2 && !l.contains("\\_"))
                .collect();
            let on_drained = live.iter().any(|l| l.contains("node-4"));
            (live.len() == 4 && !on_drained).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", ok(c.shoal(0, &["service", "ps", "web"]))));
    let rows = node_rows(&c, 0).unwrap();
    assert!(rows.iter().any(|r| r.0 == "node-4" && r.1 == "Ready"));

    // A manager leaving gives its raft seat back: one manager is left, and it still writes.
    ok(c.shoal(1, &["swarm", "leave", "--force"]));
    eventually(
        Duration::from_secs(20),
        "node-1 the only manager",
        || async {
            let rows = node_rows(&c, 0)?;
            (managers(&rows) == vec!["node-1".to_string()]).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}\n{}", node_rows(&c, 0), c.log(0), c.log(1)));
    ok(c.shoal(0, &["service", "scale", "web=2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_at_once_and_reads_answer() {
    let mut c = LocalCluster::start(3, 71).expect("start daemons");
    init(&c);
    join(&c, 1, "manager");
    join(&c, 2, "manager");
    ok(c.shoal(
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "web",
            "--replicas",
            "0",
            "sleep",
            "600",
        ],
    ));
    c.kill(1);
    c.kill(2);
    // Give the survivor an election timeout to notice it leads nobody.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let out = c.shoal(
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "more",
            "sleep",
            "600",
        ],
    );
    let took = started.elapsed();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quorum lost: 1 of 3 managers reachable, 2 needed"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        took < Duration::from_secs(2),
        "failed after {took:?}, not at once"
    );
    let ls = ok(c.shoal(0, &["service", "ls"]));
    assert!(ls.contains("web"), "reads answer without quorum: {ls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_managers_tolerate_two_losses_not_three() {
    let mut c = LocalCluster::start(5, 151).expect("start daemons");
    init(&c);
    for i in 1..5 {
        join(&c, i, "manager");
    }
    let create = |name: &str| -> Vec<String> {
        [
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            name,
            "--replicas",
            "0",
            "sleep",
            "600",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    fn argv(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    c.kill(0);
    c.kill(1);
    eventually(
        Duration::from_secs(15),
        "a write with 3 of 5 managers",
        || async {
            c.shoal(2, &argv(&create("a")))
                .status
                .success()
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(2)));
    c.kill(2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = c.shoal(3, &argv(&create("b")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("quorum lost: 2 of 5 managers reachable, 3 needed"),
        "{stderr}"
    );
    assert!(ok(c.shoal(4, &["service", "ls"])).contains(" a "));
}
