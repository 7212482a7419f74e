//! Faults on the namespace testbed (3 managers, 1 worker), each checked by what a client saw:
//! every acknowledged write is on every manager exactly once afterwards, no VIP is handed out
//! twice, every node is Ready again after healing, and the times it took are printed. A
//! partition is a drop table in a node's own namespace; a stall is SIGSTOP.

use shoal_integration::bin_dir;
use shoal_integration::testbed::{Testbed, require_root};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the shoal CLI against `host`; stdout, or stderr as the error.
fn shoal(host: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin_dir().join("shoal"))
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run shoal");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Drops all traffic between node namespace `netns` and `peers`, both ways.
fn partition(netns: &str, peers: &[&str]) {
    let set = peers.join(", ");
    let script = format!(
        "table ip fault {{
    chain in {{ type filter hook input priority -300; policy accept; ip saddr {{ {set} }} drop; }}
    chain out {{ type filter hook output priority -300; policy accept; ip daddr {{ {set} }} drop; }}
}}
"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "partition {netns}");
}

fn heal(netns: &str) {
    let ok = Command::new("ip")
        .args([
            "netns", "exec", netns, "nft", "delete", "table", "ip", "fault",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "heal {netns}");
}

/// One write: a service with no replicas on the overlay (it takes a VIP).
fn create(host: &str, name: &str) -> Result<String, String> {
    shoal(
        host,
        &[
            "service",
            "create",
            "--detach",
            "--runtime",
            "native",
            "--replicas",
            "0",
            "--network",
            "app",
            "--name",
            name,
            "sleep",
            "1",
        ],
    )
}

/// What clients were told: writes acknowledged, and how long things took.
#[derive(Default)]
struct Checker {
    acked: Vec<String>,
    figures: Vec<(String, Duration)>,
}

impl Checker {
    /// A write, recorded once acknowledged.
    fn write(&mut self, host: &str, name: &str) -> Result<(), String> {
        create(host, name)?;
        self.acked.push(name.to_string());
        Ok(())
    }

    /// Retries a write until it is acknowledged; the time it took.
    fn write_until_acked(&mut self, host: &str, name: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            match self.write(host, name) {
                Ok(()) => return start.elapsed(),
                Err(e) if e.contains("already exists") || e.contains("is already in use") => {
                    // An earlier attempt applied after all ("it may still apply").
                    self.acked.push(name.to_string());
                    return start.elapsed();
                }
                Err(e) => assert!(start.elapsed() < limit, "{name} never committed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After healing: every node Ready on every manager (timed as `figure`), then the
    /// managers agree on every acknowledged write.
    fn settle(&mut self, bed: &Testbed, ready: &str, figure: &str, agree: &str) {
        let took = until(ready, Duration::from_secs(60), || {
            (0..3).all(|i| all_ready(bed, i))
        });
        self.figure(figure, took);
        until(agree, Duration::from_secs(30), || {
            self.check(bed, 3).is_ok()
        });
    }

    fn figure(&mut self, what: &str, took: Duration) {
        eprintln!("fault figure: {what}: {took:?}");
        self.figures.push((what.to_string(), took));
    }

    /// Every manager has every acknowledged service once, and VIPs are unique.
    fn check(&self, bed: &Testbed, managers: usize) -> Result<(), String> {
        for m in &bed.nodes[..managers] {
            let ls = shoal(&m.host(), &["service", "ls", "--format", "{{.Name}}"])?;
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for name in ls.lines() {
                *count.entry(name).or_default() += 1;
            }
            for name in &self.acked {
                match count.get(name.as_str()) {
                    Some(1) => {}
                    other => return Err(format!("{}: {name} seen {other:?} times", m.name)),
                }
            }
        }
        let all = shoal(&bed.nodes[0].host(), &["service", "ls", "-q"])?;
        let ids: Vec<&str> = all.lines().collect();
        let mut args = vec![
            "service",
            "inspect",
            "--format",
            "{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}",
        ];
        args.extend(ids.iter().copied());
        let vips = shoal(&bed.nodes[0].host(), &args)?;
        let mut seen = std::collections::BTreeSet::new();
        for v in vips.lines().filter(|l| !l.is_empty()) {
            if !seen.insert(v.to_string()) {
                return Err(format!("VIP {v} handed out twice"));
            }
        }
        Ok(())
    }
}

fn leader(bed: &Testbed, from: usize) -> Option<usize> {
    let ls = shoal(
        &bed.nodes[from].host(),
        &["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"],
    )
    .ok()?;
    let name = ls
        .lines()
        .find(|l| l.ends_with(" Leader"))?
        .split(' ')
        .next()?
        .to_string();
    bed.nodes.iter().position(|n| n.name == name)
}

/// Waits until `what` holds; the time it took.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn all_ready(bed: &Testbed, from: usize) -> bool {
    shoal(
        &bed.nodes[from].host(),
        &["node", "ls", "--format", "{{.Status}}"],
    )
    .is_ok_and(|s| s.lines().count() == bed.nodes.len() && s.lines().all(|l| l == "Ready"))
}

#[test]
fn acknowledged_writes_survive_partitions_and_stalls() {
    if !require_root("acknowledged_writes_survive_partitions_and_stalls") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shflt", 4, 3, root.path()).unwrap();
    let h = |i: usize| bed.nodes[i].host();
    shoal(
        &h(0),
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.60.0/24",
            "app",
        ],
    )
    .unwrap();
    let mut c = Checker::default();
    for i in 0..3 {
        c.write(&h(i), &format!("before-{i}")).unwrap();
    }

    // 1. The leader is cut off from the other managers.
    let old = leader(&bed, 0).expect("a leader");
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let peers: Vec<&str> = bed
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, n)| n.addr.as_str())
        .collect();
    partition(&bed.nodes[old].netns, &peers);
    let took = c.write_until_acked(&h(majority[0]), "majority-1", Duration::from_secs(30));
    c.figure(
        "leader partitioned: first write acknowledged by the majority",
        took,
    );
    let start = Instant::now();
    let refused = create(&h(old), "isolated-1");
    let refusal = refused.expect_err("the isolated side must refuse writes");
    c.figure(
        "leader partitioned: the isolated side refused a write",
        start.elapsed(),
    );
    eprintln!("isolated side said: {refusal}");
    for k in 2..6 {
        c.write(&h(majority[k % 2]), &format!("majority-{k}"))
            .unwrap();
    }
    heal(&bed.nodes[old].netns);
    c.settle(
        &bed,
        "every node Ready after healing",
        "leader partition healed: every node Ready on every manager",
        "managers agree after healing",
    );
    c.check(&bed, 3).unwrap();

    // 2. The leader stalls (SIGSTOP) past the election timeout, then comes back.
    let old = leader(&bed, 0).expect("a leader");
    let other = (0..3).find(|i| *i != old).unwrap();
    let pid = bed.pid(old).unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let took = c.write_until_acked(&h(other), "stalled-1", Duration::from_secs(30));
    c.figure(
        "leader stopped: first write acknowledged by the others",
        took,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    c.write(&h(old), "after-stall").unwrap();
    c.settle(
        &bed,
        "every node Ready after the stall",
        "leader continued: every node Ready on every manager",
        "managers agree after the stall",
    );

    // 3. Every manager cut off from every other (a symmetric partition): nobody has a
    // majority, every write is refused, and after healing they elect one leader and agree.
    let addrs: Vec<String> = bed.nodes.iter().map(|n| n.addr.clone()).collect();
    for i in 0..3 {
        let others: Vec<&str> = (0..3)
            .filter(|j| *j != i)
            .map(|j| addrs[j].as_str())
            .collect();
        partition(&bed.nodes[i].netns, &others);
    }
    // A refusal is definite ("no quorum": it never applies) or not ("not committed within
    // 5s ... it may still apply": a leader that appended it before losing its majority may
    // win the next election and commit it). Only definite refusals must stay out.
    let mut definite = Vec::new();
    for i in 0..3 {
        let name = format!("split-{i}");
        let e = create(&h(i), &name);
        let e = e.expect_err("a write taken without a majority");
        if !e.contains("may still apply") {
            definite.push(name);
        }
    }
    for i in 0..3 {
        heal(&bed.nodes[i].netns);
    }
    let took = until(
        "one leader after the split",
        Duration::from_secs(30),
        || {
            let seen: Vec<Option<usize>> = (0..3).map(|i| leader(&bed, i)).collect();
            seen[0].is_some() && seen.iter().all(|l| *l == seen[0])
        },
    );
    c.figure(
        "symmetric partition healed: one leader seen by every manager",
        took,
    );
    c.write_until_acked(&h(0), "after-split", Duration::from_secs(30));

    // 4. The leader's link flaps: cut and restored five times while writes go on.
    for round in 0..5 {
        let l = leader(&bed, 0)
            .or_else(|| leader(&bed, 1))
            .expect("a leader");
        let others: Vec<&str> = (0..4)
            .filter(|j| *j != l)
            .map(|j| addrs[j].as_str())
            .collect();
        partition(&bed.nodes[l].netns, &others);
        let writer = (0..3).find(|i| *i != l).unwrap();
        c.write_until_acked(
            &h(writer),
            &format!("flap-{round}"),
            Duration::from_secs(30),
        );
        heal(&bed.nodes[l].netns);
        std::thread::sleep(Duration::from_millis(300));
    }
    c.settle(
        &bed,
        "every node Ready after flapping",
        "flapping leader link healed: every node Ready on every manager",
        "managers agree after flapping",
    );
    for i in 0..3 {
        let ls = shoal(&h(i), &["service", "ls", "--format", "{{.Name}}"]).unwrap();
        for name in &definite {
            assert!(
                !ls.lines().any(|l| l == name),
                "{name} was refused for good, yet applied: {ls}"
            );
        }
        for n in 0..3 {
            let name = format!("split-{n}");
            let copies = ls.lines().filter(|l| *l == name).count();
            assert!(copies <= 1, "{name} applied {copies} times");
        }
    }
    eprintln!(
        "symmetric partition: {} of 3 refusals definite",
        definite.len()
    );

    // 5. The worker is cut off from every manager; its task goes on serving.
    shoal(
        &h(0),
        &[
            "service",
            "create",
            "--detach",
            "--runtime",
            "native",
            "--name",
            "on-worker",
            "--constraint",
            "node.hostname==node-4",
            "sleep",
            "1000",
        ],
    )
    .unwrap();
    until("on-worker running", Duration::from_secs(30), || {
        shoal(
            &h(0),
            &[
                "service",
                "ls",
                "--filter",
                "name=on-worker",
                "--format",
                "{{.Replicas}}",
            ],
        )
        .is_ok_and(|r| r.trim() == "1/1")
    });
    let running = || {
        Command::new("pgrep")
            .args(["-f", "sleep 1000"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    let before = running();
    assert!(before >= 1);
    let managers: Vec<&str> = bed.nodes[..3].iter().map(|n| n.addr.as_str()).collect();
    partition(&bed.nodes[3].netns, &managers);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        running(),
        before,
        "the worker's task kept running while cut off"
    );
    c.write(&h(0), "while-worker-cut").unwrap();
    heal(&bed.nodes[3].netns);
    let took = until("the worker Ready again", Duration::from_secs(60), || {
        all_ready(&bed, 0)
    });
    c.figure("worker partition healed: the worker Ready", took);
    c.check(&bed, 3).unwrap();
    eprintln!(
        "fault suite: {} writes acknowledged and found once on every manager; lost 0, duplicates 0",
        c.acked.len()
    );
}

/// Unmounts a tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_manager_whose_disk_fills_stops_and_the_others_go_on() {
    use shoal_integration::LocalCluster;
    if !require_root("a_manager_whose_disk_fills_stops_and_the_others_go_on") {
        return;
    }
    let mut c = LocalCluster::start(3, 201).expect("start daemons");
    c.form_swarm(3);
    let mut checker = Checker::default();
    let h = |c: &LocalCluster, i: usize| c.nodes[i].host();
    shoal(
        &h(&c, 0),
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.61.0/24",
            "app",
        ],
    )
    .unwrap();
    checker.write(&h(&c, 0), "before-full").unwrap();

    // Node 3's raft dir moves onto a 4 MiB tmpfs, which a file then fills.
    c.kill(2);
    let raft = c.nodes[2].dir.join("state/raft");
    let saved = c.nodes[2].dir.join("raft-saved");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&raft)
            .arg(&saved)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(&raft)
            .status()
            .unwrap()
            .success()
    );
    let _mounted = Mounted(raft.clone());
    assert!(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cp -a {0}/. {1}/ && rm -rf {0}",
                saved.display(),
                raft.display()
            ))
            .status()
            .unwrap()
            .success()
    );
    c.restart(2).unwrap();
    until("node 3 back as a manager", Duration::from_secs(30), || {
        shoal(&h(&c, 2), &["node", "ls"]).is_ok_and(|s| s.matches("Ready").count() == 3)
    });
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", raft.join("filler").display()))
        .args(["bs=64k", "count=1000"])
        .stderr(std::process::Stdio::null())
        .status();

    // Writes go on: node 3 can't append, stops (fail-stop), and the majority commits.
    for k in 0..40 {
        checker.write_until_acked(
            &h(&c, k % 2),
            &format!("while-full-{k}"),
            Duration::from_secs(30),
        );
    }
    until("node 3 stopped", Duration::from_secs(30), || {
        c.pid(2).is_some_and(|pid| {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
    });
    assert!(
        c.log(2).contains("raft storage failed"),
        "node 3 says why it stopped: {}",
        c.log(2)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Space again: node 3 starts, catches up, and every acknowledged write is there.
    let _ = std::fs::remove_file(raft.join("filler"));
    c.restart(2).unwrap();
    let took = until("node 3 caught up", Duration::from_secs(60), || {
        shoal(&h(&c, 2), &["service", "ls", "--format", "{{.Name}}"])
            .is_ok_and(|ls| checker.acked.iter().all(|a| ls.lines().any(|l| l == a)))
    });
    checker.figure("space freed: the stopped manager caught up", took);
    for i in 0..3 {
        let ls = shoal(&h(&c, i), &["service", "ls", "--format", "{{.Name}}"]).unwrap();
        for a in &checker.acked {
            assert_eq!(
                ls.lines().filter(|l| l == a).count(),
                1,
                "node {}: {a}",
                i + 1
            );
        }
    }
    eprintln!(
        "disk full: {} writes acknowledged, lost 0, duplicates 0",
        checker.acked.len()
    );
}
