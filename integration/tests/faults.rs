//! Faults on the namespace testbed (3 managers, 1 worker), each checked by what a client saw:
//! every acknowledged write is on every manager exactly once afterwards, no VIP is handed out
//! twice, every node is Ready again after healing, and the times it took are printed. A
//! partition is a drop table in a node's own namespace; a stall is SIGSTOP.

use shoal_integration::bin_dir;
use shoal_integration::testbed::{Testbed, missing, require_root};
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

/// The overlay "app" that the writes attach to.
fn app_network(host: &str, subnet: &str) {
    shoal(
        host,
        &[
            "network", "create", "-d", "overlay", "--subnet", subnet, "app",
        ],
    )
    .unwrap();
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

    /// After healing: every node Ready on every manager and current (its own view of
    /// itself is the record the managers hold), within two heartbeat periods, timed as
    /// `figure`; then the managers agree on every acknowledged write.
    fn settle(&mut self, bed: &Testbed, ready: &str, figure: &str, agree: &str) {
        let bound = 2 * heartbeat_period(bed);
        let took = until(ready, Duration::from_secs(60), || {
            (0..3).all(|i| all_ready(bed, i)) && all_current(bed)
        });
        assert!(
            took <= bound,
            "{ready}: took {took:?}, more than two heartbeat periods ({bound:?})"
        );
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

/// The swarm's dispatcher heartbeat period (a node is Down after one without a report).
fn heartbeat_period(bed: &Testbed) -> Duration {
    let out = shoal(&bed.nodes[0].host(), &["swarm", "inspect"])
        .or_else(|_| shoal(&bed.nodes[1].host(), &["swarm", "inspect"]))
        .expect("swarm inspect");
    let v: serde_json::Value = serde_json::from_str(&out).expect("swarm inspect is JSON");
    let ns = v[0]["Spec"]["DispatcherHeartbeatPeriod"]
        .as_u64()
        .expect("a heartbeat period");
    Duration::from_nanos(ns)
}

/// Every node's session is current: the node record its daemon last received is the one
/// the managers hold (same version), so the changes made while it was cut off reached it.
fn all_current(bed: &Testbed) -> bool {
    bed.nodes.iter().all(|n| {
        let Ok(info) = shoal(&n.host(), &["info"]) else {
            return false;
        };
        let Ok(info) = serde_json::from_str::<serde_json::Value>(&info) else {
            return false;
        };
        let Some(seen) = info["Node"]["Version"]["Index"].as_u64() else {
            return false;
        };
        (0..3).any(|m| {
            shoal(
                &bed.nodes[m].host(),
                &["node", "inspect", "--format", "{{.Version.Index}}", &n.name],
            )
            .is_ok_and(|v| v.trim() == seen.to_string())
        })
    })
}

/// Leaders by raft term, from every manager's own "now the raft leader" log lines: every
/// leadership is logged by the node that took it, so none is missed between samples.
fn leaders_by_term(
    bed: &Testbed,
    managers: usize,
) -> BTreeMap<u64, std::collections::BTreeSet<u64>> {
    let mut terms: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for n in &bed.nodes[..managers] {
        let log = std::fs::read_to_string(n.dir.join("shoald.log")).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("this manager is now the raft leader"))
        {
            let line = strip_ansi(line);
            let field = |name: &str| -> Option<u64> {
                let at = line.find(&format!("{name}="))? + name.len() + 1;
                let digits: String = line[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            };
            let (Some(id), Some(term)) = (field("raft_id"), field("term")) else {
                panic!(
                    "{}: a leadership line without raft_id and term: {line}",
                    n.name
                );
            };
            terms.entry(term).or_default().insert(id);
        }
    }
    terms
}

/// Checks raft's election safety on what the managers logged: at most one leader per term.
fn one_leader_per_term(bed: &Testbed, managers: usize) -> usize {
    let terms = leaders_by_term(bed, managers);
    for (term, ids) in &terms {
        assert!(ids.len() == 1, "term {term} had leaders {ids:?}");
    }
    assert!(!terms.is_empty(), "no manager logged a leadership");
    terms.len()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
    app_network(&h(0), "198.19.60.0/24");
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

    // 6. The leader's disk turns slow: its writes (the raft log's fsyncs) are throttled to
    // a few operations a second. Writes go on, through it or a new leader.
    let old = leader(&bed, 0).expect("a leader");
    let slow = SlowDisk::new(&bed.prefix, &bed.root, 10);
    slow.add(bed.pid(old).unwrap());
    let other = (0..3).find(|i| *i != old).unwrap();
    let mut took = Vec::new();
    for k in 0..6 {
        took.push(c.write_until_acked(
            &h(other),
            &format!("slow-disk-{k}"),
            Duration::from_secs(30),
        ));
    }
    took.sort();
    c.figure(
        "leader's disk at 10 writes/s: median write acknowledged",
        took[took.len() / 2],
    );
    let moved = leader(&bed, other) != Some(old);
    eprintln!("slow disk: leadership moved away from the slow manager: {moved}");
    drop(slow);
    c.settle(
        &bed,
        "every node Ready after the slow disk",
        "slow disk restored: every node Ready on every manager",
        "managers agree after the slow disk",
    );
    let terms = one_leader_per_term(&bed, 3);
    eprintln!(
        "fault suite: {} writes acknowledged and found once on every manager; lost 0, duplicates 0; {terms} terms, one leader each",
        c.acked.len()
    );
}

/// A blkio (cgroup v1) throttle on the disk under the testbed's state dirs: processes
/// added to it get `iops` write operations a second. Removed on drop.
struct SlowDisk(std::path::PathBuf);

impl SlowDisk {
    fn new(prefix: &str, under: &std::path::Path, iops: u32) -> SlowDisk {
        let root = std::path::Path::new("/sys/fs/cgroup/blkio");
        assert!(
            root.join("blkio.throttle.write_iops_device").exists(),
            "the slow-disk scenario needs the cgroup v1 blkio controller at {} (this kind of machine has it)",
            root.display()
        );
        let dir = root.join(format!("{prefix}-slow"));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap();
        let device = whole_disk(under);
        std::fs::write(
            dir.join("blkio.throttle.write_iops_device"),
            format!("{device} {iops}"),
        )
        .unwrap_or_else(|e| panic!("throttle {device}: {e}"));
        SlowDisk(dir)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write("/sys/fs/cgroup/blkio/cgroup.procs", pid);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `major:minor` of the whole disk that holds `path` (throttles apply to disks, not
/// partitions).
fn whole_disk(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    assert!(
        sys.exists(),
        "{} is not on a block device ({major}:{minor}); the slow-disk scenario needs one",
        path.display()
    );
    if sys.join("partition").exists() {
        std::fs::read_to_string(sys.join("../dev"))
            .unwrap()
            .trim()
            .to_string()
    } else {
        format!("{major}:{minor}")
    }
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
    app_network(&h(&c, 0), "198.19.61.0/24");
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

/// libfaketime, preloaded into a node's shoald, reads the node's clock offset from a file
/// on every call: writing "+3h" there jumps that node's wall clock (only the wall clock:
/// the monotonic clock, which timers and heartbeats use, goes on as a real one does).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn jump_clock(bed: &Testbed, i: usize, offset: &str) {
    std::fs::write(bed.root.join(format!("clock-{i}")), offset).unwrap();
}

/// The ids of a service's tasks, as `service ps` lists them now.
fn task_ids(host: &str, service: &str) -> std::collections::BTreeSet<String> {
    shoal(host, &["service", "ps", "--format", "{{.ID}}", service])
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn a_clock_jump_on_one_node_changes_nothing_the_cluster_decides() {
    let test = "a_clock_jump_on_one_node_changes_nothing_the_cluster_decides";
    if !require_root(test) {
        return;
    }
    if !std::path::Path::new(FAKETIME).exists()
        && !missing(
            test,
            &format!(
                "{FAKETIME} is missing (Debian libfaketime; scripts/install-deps.sh installs it)"
            ),
        )
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::create("shclk", 4, root.path()).unwrap();
    for i in 0..4 {
        jump_clock(&bed, i, "+0");
        let offsets = bed.root.join(format!("clock-{i}"));
        bed.nodes[i].env = vec![
            ("LD_PRELOAD".into(), FAKETIME.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offsets.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }
    let shoald = bin_dir().join("shoald");
    for i in 0..4 {
        bed.start(i, &shoald, &[]).unwrap();
    }
    bed.form_swarm_blocking(3).unwrap();
    let h = |i: usize| bed.nodes[i].host();
    app_network(&h(0), "198.19.62.0/24");
    let mut c = Checker::default();
    c.write(&h(0), "before-jump").unwrap();
    // Tasks on the worker that end after `secs` and are restarted after `delay`
    // (doubling with each restart), by whichever manager leads: restarts are timed from
    // the leader's clock.
    let start_loop = |name: &str, secs: &str, delay: &str| {
        shoal(
            &h(0),
            &[
                "service",
                "create",
                "--detach",
                "--runtime",
                "native",
                "--name",
                name,
                "--restart-condition",
                "any",
                "--restart-delay",
                delay,
                "--constraint",
                "node.hostname==node-4",
                "sleep",
                secs,
            ],
        )
        .unwrap();
    };
    let replicas = |service: &str| {
        shoal(
            &h(0),
            &[
                "service",
                "ls",
                "--filter",
                &format!("name={service}"),
                "--format",
                "{{.Replicas}}",
            ],
        )
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    let restarted = |service: &str, what: &str, times: usize| {
        let before = task_ids(&h(0), service);
        until(what, Duration::from_secs(20), || {
            task_ids(&h(0), service).difference(&before).count() >= times
        })
    };

    // 1. The leader's wall clock jumps 3 hours ahead: it stamps what it sees there.
    let l = leader(&bed, 0).expect("a leader");
    jump_clock(&bed, l, "+3h");
    start_loop("stamped", "3", "5s");
    for i in 0..3 {
        c.write_until_acked(&h(i), &format!("ahead-{i}"), Duration::from_secs(30));
    }
    until("stamped's task runs", Duration::from_secs(30), || {
        replicas("stamped") == "1/1"
    });
    c.settle(
        &bed,
        "every node Ready with the leader's clock ahead",
        "leader's clock 3 h ahead: every node Ready on every manager",
        "managers agree with the leader's clock ahead",
    );

    // 2. While its task waits out the 5 s before its restart, the leader's clock jumps
    // back: that task ended "3 hours from now", and the restart must not wait for it.
    until("stamped's task ended", Duration::from_secs(30), || {
        replicas("stamped") == "0/1"
    });
    jump_clock(&bed, l, "+0");
    let took = restarted(
        "stamped",
        "a restart after the leader's clock jumped back 3 h",
        1,
    );
    c.figure(
        "leader's clock back 3 h: the pending restart (5 s delay) came",
        took,
    );
    for i in 0..3 {
        c.write_until_acked(&h(i), &format!("back-{i}"), Duration::from_secs(30));
    }

    // 3. The worker's clock falls 30 minutes behind: within the hour by which the CA
    // backdates certificates, so its TLS sessions with the managers go on.
    jump_clock(&bed, 3, "-30m");
    start_loop("lagging", "1", "1s");
    let took = restarted("lagging", "a task restarted on a worker 30 min behind", 2);
    c.figure(
        "worker's clock 30 min behind: a 1 s task started and restarted",
        took,
    );
    c.settle(
        &bed,
        "every node Ready after the clock jumps",
        "clock jumps: every node Ready on every manager",
        "managers agree after the clock jumps",
    );
    c.check(&bed, 3).unwrap();
    let terms = one_leader_per_term(&bed, 3);
    eprintln!(
        "clock jumps: {} writes acknowledged, lost 0, duplicates 0; {terms} terms, one leader each",
        c.acked.len()
    );
}
