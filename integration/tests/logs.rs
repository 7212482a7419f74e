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

/// `(time, text)` of each line `service logs --timestamps` printed.
fn stamped(out: &str) -> Vec<(i64, String)> {
    out.lines()
        .map(|l| {
            let (stamp, rest) = l.split_once(' ').expect("a time first");
            let t =
                time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|e| panic!("{stamp:?} in {l:?}: {e}"));
            let text = rest.split_once("| ").map(|(_, t)| t).unwrap_or("");
            (t.unix_timestamp_nanos() as i64, text.to_string())
        })
        .collect()
}

/// The numbers of the `line N` records in the task's files, as the node keeps them.
fn kept_numbers(task_dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    for file in shoal_agent::logs::rotate::files_oldest_first(&task_dir.join("output.log")) {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let rec = shoal_agent::logs::record::parse(line);
            if let Some(n) = rec.text.strip_prefix("line ") {
                out.push(n.split(' ').next().unwrap().parse().unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_output_keeps_times_and_streams_stays_capped_and_outlives_a_restart() {
    let mut c = LocalCluster::start(1, 181).expect("start daemon");
    c.form_swarm(1);
    let before = shoal_agent::logs::record::now();
    // About 10 KB/s, every 20th line on stderr; the cap is 2 files of 4 KiB.
    ok(
        &c,
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "chatty",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=4k",
            "--log-opt",
            "max-file=2",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); if [ $((i % 20)) = 0 ]; then echo \"err $i\" >&2; fi; echo \"line $i and enough text to fill the files quickly ........................\"; sleep 0.01; done",
        ],
    );
    let tasks = c.nodes[0].dir.join("state").join("tasks");
    let task_dir = eventually(
        Duration::from_secs(20),
        "the task's output rotated",
        || async {
            let dir = std::fs::read_dir(&tasks).ok()?.flatten().next()?.path();
            dir.join("output.log.1").exists().then_some(dir)
        },
    )
    .await
    .unwrap();

    // Capped: the current file and one older, each within 4 KiB.
    std::thread::sleep(Duration::from_secs(2));
    let mut names: Vec<String> = std::fs::read_dir(&task_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("output.log"))
        .collect();
    names.sort();
    assert_eq!(names, ["output.log", "output.log.1"]);
    for n in &names {
        let len = std::fs::metadata(task_dir.join(n)).unwrap().len();
        assert!(len <= 4096, "{n} holds {len} bytes");
    }
    // Both streams, each line stamped.
    let kept = std::fs::read_to_string(task_dir.join("output.log.1")).unwrap();
    let records: Vec<_> = kept.lines().map(shoal_agent::logs::record::parse).collect();
    assert!(records.iter().all(|r| r.time.is_some_and(|t| t >= before)));
    assert!(
        records
            .iter()
            .any(|r| r.stream == shoal_api::logs::Stream::Stderr && r.text.starts_with("err ")),
        "stderr lines are kept as stderr: {kept}"
    );

    // --timestamps: Docker's RFC 3339 times, in order, after the service was created.
    let out = ok(
        &c,
        0,
        &["service", "logs", "--timestamps", "--tail", "20", "chatty"],
    );
    let lines = stamped(&out);
    assert_eq!(lines.len(), 20, "{out}");
    let now = shoal_agent::logs::record::now();
    assert!(
        lines.iter().all(|(t, _)| *t >= before && *t <= now),
        "{out}"
    );
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "in order: {out}"
    );
    // --since the 15th of those: that line and the ones after it.
    let (since, _) = &lines[15];
    let since_arg = shoal_api::logs::format_time(*since);
    let out = ok(
        &c,
        0,
        &[
            "service",
            "logs",
            "--timestamps",
            "--since",
            &since_arg,
            "chatty",
        ],
    );
    let later = stamped(&out);
    assert!(later.len() >= 5, "{out}");
    assert!(later.iter().all(|(t, _)| t >= since), "{out}");
    assert_eq!(later[0].1, lines[15].1, "{out}");
    let e = c.shoal(0, &["service", "logs", "--since", "yesterday", "chatty"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid --since \"yesterday\""));

    // shoald goes away; the task and its log writer go on, so nothing it prints is lost.
    c.kill(0);
    let at_kill = *kept_numbers(&task_dir).last().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let while_down = *kept_numbers(&task_dir).last().unwrap();
    assert!(
        while_down > at_kill + 10,
        "output kept while shoald was down: {at_kill} then {while_down}"
    );
    c.restart(0).unwrap();
    let numbers = eventually(
        Duration::from_secs(20),
        "logs after the restart",
        || async {
            let out = c.shoal(0, &["service", "logs", "--tail", "400", "chatty"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let n: Vec<u64> = text
                .lines()
                .filter_map(|l| l.split_once("| line ")?.1.split(' ').next()?.parse().ok())
                .collect();
            (out.status.success() && n.last().is_some_and(|l| *l > while_down)).then_some(n)
        },
    )
    .await
    .unwrap();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost across the restart: {numbers:?}"
    );
}
