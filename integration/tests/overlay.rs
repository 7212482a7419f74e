//! VXLAN overlays across the namespace testbed: tasks on three nodes reach each other by
//! their overlay addresses (TCP and UDP), another network can't reach them, the kernel holds
//! exactly the FDB and neighbour entries of the remote tasks, and scaling down removes them.

use serde_json::Value;
use shoal_api::control::{ControlRequest as C, ControlResponse as R};
use shoal_api::objects::TaskState;
use shoal_integration::testbed::{Testbed, require_root};
use shoal_integration::{bin_dir, shoal_ok as shoal};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER: &str = r#"
import socket, threading
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7001))
    while True:
        d, a = u.recvfrom(100); u.sendto(b"udp " + d, a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7000)); s.listen()
while True:
    c, a = s.accept(); c.sendall(("tcp " + a[0]).encode()); c.close()
"#;

/// Runs a Python client in the network namespace of process `pid`; its output or error.
fn from_task(pid: u32, code: &str) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "python3", "-c", code])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tcp(ip: &str) -> String {
    format!(
        "import socket\ns=socket.create_connection(('{ip}',7000),timeout=2)\nprint(s.recv(100).decode())"
    )
}

fn udp(ip: &str) -> String {
    format!(
        "import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nu.settimeout(2)\nu.sendto(b'ping',('{ip}',7001))\nprint(u.recv(100).decode())"
    )
}

struct TaskInfo {
    node: String,
    ip: String,
    pid: u32,
}

fn running_tasks(host: &str, service: &str) -> Vec<TaskInfo> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = shoal_api::client::connect_local(host).await.unwrap();
        let req = shoal_api::local::LocalRequest::Control(C::TaskList {
            service: Some(service.into()),
            node: None,
        });
        let shoal_api::local::LocalResponse::Control(R::Tasks(tasks)) =
            shoal_api::client::call_local(&mut client, &req)
                .await
                .unwrap()
        else {
            panic!("unexpected answer")
        };
        tasks
            .into_iter()
            .filter(|t| {
                t.task.status.state == TaskState::Running
                    && t.task.desired_state == TaskState::Running
            })
            .map(|t| TaskInfo {
                node: t.node_name.clone(),
                ip: t.task.networks_attachments[0].addresses[0]
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string(),
                pid: t
                    .task
                    .status
                    .container_status
                    .as_ref()
                    .map(|c| c.pid)
                    .unwrap_or(0),
            })
            .collect()
    })
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

type Pairs = BTreeSet<(String, String)>;

/// (mac, dst) FDB entries and (ip, mac) neighbours of a node's vxlan device.
fn kernel_entries(node_ns: &str, vni: u32) -> (Pairs, Pairs) {
    let json = |args: &[&str]| -> Vec<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", node_ns])
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let dev = format!("sv{vni}");
    let fdb = json(&["bridge", "-j", "fdb", "show", "dev", &dev])
        .iter()
        .filter_map(|f| {
            Some((
                f["mac"].as_str()?.to_string(),
                f["dst"].as_str()?.to_string(),
            ))
        })
        .collect();
    let neigh = json(&["ip", "-j", "neigh", "show", "dev", &dev])
        .iter()
        .filter_map(|n| {
            Some((
                n["dst"].as_str()?.to_string(),
                n["lladdr"].as_str()?.to_string(),
            ))
        })
        .collect();
    (fdb, neigh)
}

fn mac(ip: &str) -> String {
    let o: Vec<u8> = ip.split('.').map(|p| p.parse().unwrap()).collect();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[test]
fn tasks_reach_each_other_across_nodes_over_vxlan() {
    if !require_root("tasks_reach_each_other_across_nodes_over_vxlan") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::up("shov", 3, 1, root.path()).unwrap();
    // An underlay host that is not a node, for the VXLAN filter's check below.
    let stranger = bed.outside_client("vx", "198.18.0.200").unwrap();
    let h1 = bed.nodes[0].host();
    shoal(
        &h1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.30.0/24",
            "app",
        ],
    );
    shoal(
        &h1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.31.0/24",
            "other",
        ],
    );
    let vni: u32 = {
        let inspect: Value =
            serde_json::from_str(&shoal(&h1, &["network", "inspect", "app"])).unwrap();
        inspect[0]["DriverState"]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    shoal(
        &h1,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "echo",
            "--replicas",
            "3",
            "--network",
            "app",
            "python3",
            "-c",
            SERVER,
        ],
    );
    shoal(
        &h1,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "lone",
            "--network",
            "other",
            "python3",
            "-c",
            SERVER,
        ],
    );
    let tasks = wait_for("echo running on 3 nodes", 30, || {
        let t = running_tasks(&h1, "echo");
        let nodes: BTreeSet<&str> = t.iter().map(|t| t.node.as_str()).collect();
        (t.len() == 3 && nodes.len() == 3).then_some(t)
    });
    let lone = wait_for("lone running", 30, || running_tasks(&h1, "lone").pop());

    // Every task reaches every other one, TCP and UDP, and is seen with its own address.
    for from in &tasks {
        for to in &tasks {
            let answer = wait_for("an answer over the overlay", 10, || {
                let a = from_task(from.pid, &tcp(&to.ip));
                a.starts_with("tcp").then_some(a)
            });
            assert_eq!(
                answer.trim(),
                format!("tcp {}", from.ip),
                "{} -> {}",
                from.node,
                to.node
            );
            assert!(
                from_task(from.pid, &udp(&to.ip)).starts_with("udp ping"),
                "UDP {} -> {}",
                from.node,
                to.node
            );
        }
        // MTU inside the task: the underlay's 1500 minus 50.
        // (netlink, not /sys: nsenter keeps the caller's /sys mount.)
        let link = Command::new("nsenter")
            .args([
                "-t",
                &from.pid.to_string(),
                "-n",
                "ip",
                "-j",
                "link",
                "show",
                "eth0",
            ])
            .output()
            .unwrap();
        let link: Value = serde_json::from_slice(&link.stdout).unwrap();
        assert_eq!(link[0]["mtu"].as_u64(), Some(1450), "{link}");
    }
    // Another network can't reach them.
    let blocked = from_task(lone.pid, &tcp(&tasks[0].ip));
    assert!(
        !blocked.starts_with("tcp"),
        "isolation between networks: {blocked}"
    );

    // The kernel holds exactly the remote tasks on each node.
    let check = |tasks: &[TaskInfo]| {
        for (i, n) in bed.nodes.iter().enumerate() {
            let (fdb, neigh) = kernel_entries(&n.netns, vni);
            let local = tasks.iter().any(|t| t.node == n.name);
            let link = Command::new("ip")
                .args(["-n", &n.netns, "link", "show", &format!("sv{vni}")])
                .output()
                .unwrap();
            if !local {
                // A node without tasks on the network has none of its devices.
                if link.status.success() {
                    return Err(format!(
                        "node {}: sv{vni} still present without local tasks",
                        i + 1
                    ));
                }
                continue;
            }
            let remote: Vec<&TaskInfo> = tasks.iter().filter(|t| t.node != n.name).collect();
            let want_fdb: BTreeSet<(String, String)> = remote
                .iter()
                .map(|t| {
                    let node_idx: usize = t.node.trim_start_matches("node-").parse().unwrap();
                    (mac(&t.ip), bed.nodes[node_idx - 1].addr.clone())
                })
                .collect();
            let want_neigh: BTreeSet<(String, String)> =
                remote.iter().map(|t| (t.ip.clone(), mac(&t.ip))).collect();
            if fdb != want_fdb || neigh != want_neigh {
                return Err(format!(
                    "node {}: fdb {fdb:?} want {want_fdb:?}; neigh {neigh:?} want {want_neigh:?}",
                    i + 1
                ));
            }
        }
        Ok(())
    };
    wait_for("exact FDB and neighbour entries", 10, || check(&tasks).ok());

    // VXLAN from an underlay host that is not a node is dropped in the node's namespace
    // before the kernel decapsulates it (the overlay's own traffic went through above).
    let node1 = bed.nodes[0].netns.clone();
    let dropped = || -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node1,
                "nft",
                "list",
                "table",
                "ip",
                "shoal_underlay",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "no underlay filter on node 1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&bed.nodes[1].addr) && text.contains(&bed.nodes[2].addr),
            "the other nodes may send: {text}"
        );
        text.split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {text}"))
    };
    let before = dropped();
    let send = format!(
        "for i in $(seq 20); do printf 'vxlan' > /dev/udp/{}/4789; done",
        bed.nodes[0].addr
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &stranger, "bash", "-c", &send])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the stranger's datagrams dropped", 5, || {
        (dropped() >= before + 20).then_some(())
    });

    // Scaling down removes the entries everywhere.
    shoal(&h1, &["service", "scale", "echo=1"]);
    let one = wait_for("one echo task", 20, || {
        let t = running_tasks(&h1, "echo");
        (t.len() == 1).then_some(t)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check(&one) {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "after scale down: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restarted_shoald_adopts_its_tasks_and_keeps_the_kernel_state() {
    if !require_root("a_restarted_shoald_adopts_its_tasks_and_keeps_the_kernel_state") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::create("shoa", 2, root.path()).unwrap();
    let shoald = bin_dir().join("shoald");
    for i in 0..2 {
        bed.start(i, &shoald, &[]).unwrap();
    }
    bed.form_swarm_blocking(1).unwrap();
    let h1 = bed.nodes[0].host();
    shoal(
        &h1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.40.0/24",
            "app",
        ],
    );
    shoal(
        &h1,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "echo",
            "--replicas",
            "2",
            "--network",
            "app",
            "python3",
            "-c",
            SERVER,
        ],
    );
    let tasks = wait_for("2 tasks on 2 nodes", 30, || {
        let t = running_tasks(&h1, "echo");
        let nodes: BTreeSet<&str> = t.iter().map(|t| t.node.as_str()).collect();
        (t.len() == 2 && nodes.len() == 2).then_some(t)
    });
    let kernel = |ns: &str| {
        let links = Command::new("ip")
            .args(["-n", ns, "-br", "link"])
            .output()
            .unwrap();
        let fdb = Command::new("ip")
            .args(["netns", "exec", ns, "bridge", "fdb", "show"])
            .output()
            .unwrap();
        let neigh = Command::new("ip")
            .args(["-n", ns, "neigh", "show"])
            .output()
            .unwrap();
        format!(
            "{}{}{}",
            String::from_utf8_lossy(&links.stdout),
            // Permanent entries only: what the bridge learned from traffic comes and goes.
            String::from_utf8_lossy(&fdb.stdout)
                .lines()
                .filter(|l| l.contains("permanent"))
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&neigh.stdout)
                .lines()
                .filter(|l| l.contains("PERMANENT"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let on_worker = tasks.iter().find(|t| t.node == "node-2").unwrap();
    let on_manager = tasks.iter().find(|t| t.node == "node-1").unwrap();
    // Converged first: the worker knows the manager's task.
    let before = wait_for("the worker's entry for the other task", 10, || {
        let k = kernel(&bed.nodes[1].netns);
        k.contains(&format!("{} dev", mac(&on_manager.ip)))
            .then_some(k)
    });

    // SIGKILL the worker's shoald and start it again.
    bed.restart(1, &shoald, &[]).unwrap();
    let after_tasks = wait_for("the same tasks running", 30, || {
        let t = running_tasks(&h1, "echo");
        (t.len() == 2 && shoal(&h1, &["node", "ls"]).matches("Ready").count() == 2).then_some(t)
    });
    let ids = |v: &[TaskInfo]| {
        v.iter()
            .map(|t| (t.node.clone(), t.ip.clone(), t.pid))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ids(&after_tasks), ids(&tasks), "no task was replaced");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        kernel(&bed.nodes[1].netns),
        before,
        "kernel state unchanged"
    );
    let answer = from_task(on_manager.pid, &tcp(&on_worker.ip));
    assert_eq!(
        answer.trim(),
        format!("tcp {}", on_manager.ip),
        "still reachable"
    );

    // A simulated reboot of the node's networking: its overlay links deleted by hand, then
    // shoald restarted. Everything comes back (bridge MACs and interface indexes aside).
    let semantic = |ns: &str| {
        let names: BTreeSet<String> = Command::new("ip")
            .args(["-n", ns, "-j", "link", "show"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<Vec<Value>>(&o.stdout).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect();
        let vni_dev = names
            .iter()
            .find(|n| n.starts_with("sv"))
            .cloned()
            .unwrap_or_default();
        let vni: u32 = vni_dev.trim_start_matches("sv").parse().unwrap_or(0);
        (names, kernel_entries(ns, vni))
    };
    let before = semantic(&bed.nodes[1].netns);
    for link in &before.0 {
        if link.starts_with("sb") || link.starts_with("sv") || link.starts_with("st") {
            let _ = Command::new("ip")
                .args(["-n", &bed.nodes[1].netns, "link", "del", link])
                .status();
        }
    }
    let broken = from_task(on_manager.pid, &tcp(&on_worker.ip));
    assert!(
        !broken.starts_with("tcp"),
        "the links really are gone: {broken}"
    );
    bed.restart(1, &shoald, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while semantic(&bed.nodes[1].netns) != before {
        assert!(
            Instant::now() < deadline,
            "not restored: {:?} != {:?}\n{}",
            semantic(&bed.nodes[1].netns),
            before,
            std::fs::read_to_string(bed.nodes[1].dir.join("shoald.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = wait_for("reachable again", 10, || {
        let a = from_task(on_manager.pid, &tcp(&on_worker.ip));
        a.starts_with("tcp").then_some(a)
    });
    assert_eq!(answer.trim(), format!("tcp {}", on_manager.ip));
}
