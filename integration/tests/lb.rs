//! Service VIPs and the routing mesh on the 3-node testbed, checked with real traffic and
//! with the kernel's own tables (`nft -j list`): every client task reaches every replica
//! through the VIP and the replica sees the client's address; UDP; isolation between
//! networks; published ports on every node (the local replica sees the outside client);
//! dynamic ports opened and freed; scaling, a killed task, a drained node and a restarted
//! shoald followed by every node; an idle connection outlives a minute.

use serde_json::Value;
use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_root};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Answers "<slot> <address it was reached on> <client address>" over TCP and UDP.
const SERVER: &str = r#"# shoal-lb-web
import os, socket, threading
slot = os.environ["SHOAL_TASK_SLOT"]
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 8080))
    while True:
        d, a = u.recvfrom(100)
        u.sendto(("udp %s %s" % (slot, a[0])).encode(), a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(512)
def serve(c):
    try:
        while c.recv(100):
            c.sendall(("%s %s %s\n" % (slot, c.getsockname()[0], c.getpeername()[0])).encode())
    except Exception:
        pass
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// N connections (or UDP datagrams) to addr:port; prints one JSON list of answers.
const PROBE: &str = r#"
import os, socket, sys, json
# Into the task's cgroup first, like `docker exec`: the eBPF balancer acts on its sockets.
cg = os.environ.get("SHOAL_JOIN_CGROUP")
if cg:
    open(cg + "/cgroup.procs", "w").write(str(os.getpid()))
addr, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = []
for i in range(n):
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(b"?", (addr, port))
            d, a = s.recvfrom(200)
            out.append(d.decode().strip() + " from " + a[0])
        else:
            s = socket.create_connection((addr, port), timeout=5)
            s.sendall(b"?")
            out.append(s.recv(200).decode().strip())
        s.close()
    except Exception as e:
        out.append("error " + type(e).__name__)
print(json.dumps(out))
"#;

/// Pids of tasks whose command line holds `marker`, by the node (1-based) running them.
fn task_pids(marker: &str) -> BTreeMap<usize, Vec<u32>> {
    let out = Command::new("pgrep").args(["-f", marker]).output().unwrap();
    let mut by_node: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for pid in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        let Some(dir) = env
            .split('\0')
            .find_map(|v| v.strip_prefix("SHOAL_TASK_DIR="))
        else {
            continue;
        };
        if let Some(n) = dir
            .split('/')
            .find_map(|p| p.strip_prefix("node-"))
            .and_then(|n| n.parse().ok())
        {
            by_node.entry(n).or_default().push(pid);
        }
    }
    by_node
}

/// Runs the probe in the network namespace of `pid` (or the named namespace `ns`).
fn probe_in(target: &[&str], addr: &str, port: u16, n: usize, proto: &str) -> Vec<String> {
    probe_env(target, addr, port, n, proto, "")
}

fn probe_env(
    target: &[&str],
    addr: &str,
    port: u16,
    n: usize,
    proto: &str,
    cgroup: &str,
) -> Vec<String> {
    let mut cmd = Command::new("nsenter");
    cmd.env("SHOAL_JOIN_CGROUP", cgroup);
    cmd.args(target).args(["python3", "-c", PROBE, addr]);
    cmd.args([&port.to_string(), &n.to_string(), proto]);
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("probe: {}", String::from_utf8_lossy(&out.stderr)))
}

fn probe_task(pid: u32, addr: &str, port: u16, n: usize, proto: &str) -> Vec<String> {
    let cg = cgroup_of(pid);
    probe_env(&["-t", &pid.to_string(), "-n"], addr, port, n, proto, &cg)
}

/// The cgroup v2 directory of process `pid`.
fn cgroup_of(pid: u32) -> String {
    let mount = shoal_agent::lb::ebpf::cgroup2_mount().expect("a cgroup v2 hierarchy");
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    mount
        .join(own.trim_start_matches('/'))
        .display()
        .to_string()
}

fn probe_ns(ns: &str, addr: &str, port: u16, n: usize) -> Vec<String> {
    probe_in(&[&format!("--net=/run/netns/{ns}")], addr, port, n, "tcp")
}

fn inspect(h: &str, what: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(&shoal(h, &[what, "inspect", name])).unwrap();
    v[0].clone()
}

fn strip(addr: &str) -> String {
    addr.split('/').next().unwrap_or_default().to_string()
}

/// Address of a task process's interface `dev` (eth0: its first network; eth1: ingress).
fn addr_of(pid: u32, dev: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            dev,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(strip(text.split_whitespace().nth(3)?))
}

/// Addresses on `dev` of the live task processes whose command line holds `marker`.
fn task_addrs(marker: &str, dev: &str) -> BTreeSet<String> {
    task_pids(marker)
        .into_values()
        .flatten()
        .filter_map(|pid| addr_of(pid, dev))
        .collect()
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(30), f);
}

/// (addresses that answered, client addresses they saw) from probe answers.
fn summary(answers: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut servers = BTreeSet::new();
    let mut clients = BTreeSet::new();
    for a in answers {
        let parts: Vec<&str> = a.split_whitespace().collect();
        if parts.len() >= 3 && parts[0] != "error" {
            servers.insert(parts[1].to_string());
            clients.insert(parts[2].to_string());
        }
    }
    (servers, clients)
}

fn nft_json(target: &[&str], table: &str) -> Value {
    let out = Command::new("nsenter")
        .args(target)
        .args(["nft", "-j", "list", "table", "ip", table])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Elements of a map or set in an `nft -j` listing.
fn elements(listing: &Value, name: &str) -> Vec<Value> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("map").or_else(|| o.get("set")))
        .filter(|m| m["name"] == name)
        .flat_map(|m| m["elem"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The eBPF dataplane, attached to a cgroup of each node's own (as on this hybrid cgroup
/// layout; on a real host it is the root cgroup), where shoald and its tasks live.
#[test]
fn vips_and_the_routing_mesh_follow_the_cluster_with_ebpf() {
    if !require_root("vips_and_the_routing_mesh_follow_the_cluster_with_ebpf") {
        return;
    }
    let cg2 = shoal_agent::lb::ebpf::cgroup2_mount().expect("a cgroup v2 hierarchy");
    let cgroup = cg2.join("shlbe").join("{node}").display().to_string();
    follows_the_cluster(
        "shlbe",
        &["--dataplane", "ebpf", "--cgroup", &cgroup],
        "ebpf",
    );
}

#[test]
fn vips_and_the_routing_mesh_follow_the_cluster_with_nftables() {
    if !require_root("vips_and_the_routing_mesh_follow_the_cluster_with_nftables") {
        return;
    }
    follows_the_cluster("shlbn", &["--dataplane", "nftables"], "nftables");
}

/// The iptables fallback, kube-proxy-style chains, through the same scenario.
#[test]
fn vips_and_the_routing_mesh_follow_the_cluster_with_iptables() {
    if !require_root("vips_and_the_routing_mesh_follow_the_cluster_with_iptables") {
        return;
    }
    follows_the_cluster("shlbi", &["--dataplane", "iptables"], "iptables");
}

/// `iptables-save -t TABLE` inside a namespace (`nsenter` target flags).
fn iptables_save(target: &[&str], table: &str) -> String {
    let out = Command::new("nsenter")
        .args(target)
        .args(["iptables-save", "-t", table])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entries of a map pinned by node `node`'s eBPF dataplane, as bpftool shows them.
fn bpf_map(prefix: &str, node: &str, map: &str) -> Vec<Value> {
    let path = shoal_integration::testbed::bpf_dir(prefix, node).join(map);
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("bpftool (apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The two dataplane runs find their tasks by process (host-wide) and move this process
/// between cgroups: one at a time.
static ONE_TESTBED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn follows_the_cluster(prefix: &str, flags: &[&str], dataplane: &str) {
    let _one = ONE_TESTBED.lock().unwrap_or_else(|p| p.into_inner());
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::up_with(prefix, 3, 1, root.path(), flags).unwrap();
    for n in &bed.nodes {
        let shown = inspect(&bed.nodes[0].host(), "node", &n.name)["Description"]["Dataplane"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            shown.starts_with(dataplane),
            "{}: dataplane {shown:?}",
            n.name
        );
    }
    let outside = bed.outside_client("out", "198.18.0.200").unwrap();
    let h = bed.nodes[0].host();
    for (net, subnet) in [("app", "198.19.90.0/24"), ("other", "198.19.91.0/24")] {
        shoal(
            &h,
            &[
                "network", "create", "-d", "overlay", "--subnet", subnet, net,
            ],
        );
    }
    let app_id = inspect(&h, "network", "app")["ID"]
        .as_str()
        .unwrap()
        .to_string();
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "app",
            "--publish",
            "8080:8080",
            "--stop-grace-period",
            "20s",
            "python3",
            "-c",
            SERVER,
        ],
    );
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "client",
            "--mode",
            "global",
            "--network",
            "app",
            "sleep",
            "900901",
        ],
    );
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "lone",
            "--network",
            "other",
            "sleep",
            "900902",
        ],
    );
    let web = inspect(&h, "service", "web");
    let vip = web["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["NetworkID"] == app_id.as_str())
        .map(|v| strip(v["Addr"].as_str().unwrap()))
        .unwrap();
    eventually("3 web replicas, a client on each node, lone", || {
        task_pids("shoal-lb-web")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 3
            && task_pids("sleep 900901").len() == 3
            && task_pids("sleep 900902").len() == 1
    });
    let clients = task_pids("sleep 900901");
    let replicas = task_addrs("shoal-lb-web", "eth0");
    assert_eq!(replicas.len(), 3);

    // An idle connection through the VIP, checked again after a minute.
    let idle_pid = clients[&1][0];
    let idle_start = Instant::now();
    // The test process enters the client's cgroup for the connect (a socket belongs to
    // the cgroup it was made in) and leaves it right after.
    let own_cgroup = cgroup_of(std::process::id());
    std::fs::write(
        format!("{}/cgroup.procs", cgroup_of(idle_pid)),
        std::process::id().to_string(),
    )
    .unwrap();
    let mut idle = {
        let vip = vip.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{idle_pid}/ns/net")).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // The replicas may not all be running yet: an idle VIP refuses at once.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut c = loop {
                match TcpStream::connect((vip.as_str(), 8080)) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => panic!("connect to the VIP: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            c.write_all(b"?").unwrap();
            let mut buf = [0u8; 200];
            assert!(c.read(&mut buf).unwrap() > 0);
            c
        })
        .join()
        .unwrap()
    };

    // From a client on every node, the VIP reaches all 3 replicas, which see the client.
    for (node, pids) in &clients {
        let pid = pids[0];
        let own = addr_of(pid, "eth0").unwrap();
        eventually(&format!("node {node} balancing to every replica"), || {
            let (servers, seen) = summary(&probe_task(pid, &vip, 8080, 30, "tcp"));
            servers == replicas && seen == [own.clone()].into()
        });
        let udp = probe_task(pid, &vip, 8080, 3, "udp");
        assert!(
            udp.iter()
                .all(|a| a.starts_with("udp ") && a.ends_with(&format!("{own} from {vip}"))),
            "UDP through the VIP from node {node}: {udp:?}"
        );
    }
    std::fs::write(
        format!("{own_cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .unwrap();
    if dataplane == "ebpf" {
        // The node's maps hold the VIP with three backends, each a replica.
        let key = u32::from_ne_bytes(vip.parse::<std::net::Ipv4Addr>().unwrap().octets());
        let svc = bpf_map(prefix, "node-2", "shoal_svc");
        assert!(
            svc.iter()
                .any(|e| e["formatted"]["key"] == key && e["formatted"]["value"]["count"] == 3),
            "shoal_svc: {svc:?}"
        );
        let slots: BTreeSet<String> = bpf_map(prefix, "node-2", "shoal_backends")
            .iter()
            .filter(|e| e["formatted"]["key"]["vip"] == key)
            .filter_map(|e| e["formatted"]["value"].as_u64())
            .map(|v| std::net::Ipv4Addr::from((v as u32).to_ne_bytes()).to_string())
            .collect();
        assert_eq!(slots, replicas, "shoal_backends");
    } else if dataplane == "iptables" {
        // The client's namespace jumps from the VIP to its chain, which DNATs to each
        // replica.
        let nat = iptables_save(&["-t", &clients[&2][0].to_string(), "-n"], "nat");
        assert!(
            nat.contains(&format!("-A SHOAL-VIPS -d {vip}/32 -j SHOAL-SVC-")),
            "{nat}"
        );
        for r in &replicas {
            assert!(
                nat.contains(&format!("-j DNAT --to-destination {r}")),
                "{r}: {nat}"
            );
        }
    } else {
        check_nft_vips(&clients, &vip);
    }
    // A task on another network neither resolves nor reaches the service.
    let lone = task_pids("sleep 900902").into_values().next().unwrap()[0];
    let isolated = probe_task(lone, &vip, 8080, 1, "tcp");
    assert!(isolated[0].starts_with("error"), "{isolated:?}");

    // The published port answers on every node's address; a replica on the entry node
    // sees the outside client, others see that node's ingress address.
    let nodes: Vec<Value> = (0..3)
        .map(|i| inspect(&h, "node", &bed.nodes[i].name))
        .collect();
    let web_ingress = task_addrs("shoal-lb-web", "eth1");
    for (i, node) in nodes.iter().enumerate() {
        let addr = &bed.nodes[i].addr;
        let node_ingress = strip(node["IngressAddr"].as_str().unwrap());
        eventually(&format!("port 8080 on node {}", i + 1), || {
            let answers = probe_ns(&outside, addr, 8080, 30);
            let (servers, seen) = summary(&answers);
            servers == web_ingress
                && seen
                    .iter()
                    .all(|c| c == "198.18.0.200" || *c == node_ingress)
                && seen.contains(&node_ingress)
        });
    }
    if dataplane == "ebpf" {
        // The tc mesh's map holds TCP port 8080 (network byte order) with 3 backends.
        let ports = bpf_map(prefix, "node-2", "shoal_mesh_ports");
        let key = u16::from_ne_bytes(8080u16.to_be_bytes());
        assert!(
            ports.iter().any(|e| e["formatted"]["key"]["proto"] == 6
                && e["formatted"]["key"]["port"] == key
                && e["formatted"]["value"]["count"] == 3),
            "shoal_mesh_ports: {ports:?}"
        );
    } else if dataplane == "iptables" {
        let nat = iptables_save(
            &[&format!("--net=/run/netns/{}", bed.nodes[1].netns)],
            "nat",
        );
        assert!(
            nat.contains("-A SHOAL-MESH -p tcp -m tcp --dport 8080"),
            "{nat}"
        );
    } else {
        let mesh = nft_json(
            &[&format!("--net=/run/netns/{}", bed.nodes[1].netns)],
            "shoal_mesh",
        );
        assert!(
            elements(&mesh, "ports")
                .iter()
                .any(|e| e[0]["concat"] == serde_json::json!(["tcp", 8080])),
            "{mesh}"
        );
    }

    // Tasks are reachable from outside only through published ports: routed straight at a
    // replica's ingress address through node 1, a connection goes nowhere.
    let first_ingress = web_ingress.iter().next().unwrap().clone();
    let route = Command::new("ip")
        .args([
            "-n",
            &outside,
            "route",
            "add",
            "198.19.0.0/24",
            "via",
            &bed.nodes[0].addr,
        ])
        .status()
        .unwrap();
    assert!(route.success());
    let direct = probe_ns(&outside, &first_ingress, 8080, 1);
    assert!(
        direct[0].starts_with("error"),
        "a task's port is open to the underlay: {direct:?}"
    );

    // A dynamic port: open on every node, then closed everywhere and free again.
    shoal(&h, &["service", "update", "--publish-add", "80", "web"]);
    let ports = inspect(&h, "service", "web")["Endpoint"]["Ports"].clone();
    let dynamic = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["TargetPort"] == 80)
        .map(|p| p["PublishedPort"].as_u64().unwrap() as u16)
        .unwrap();
    assert!((30000..=32767).contains(&dynamic), "{ports}");
    // The new port targets 80, where nothing listens: a reset, not a timeout, proves the
    // node forwarded it to a task (the replicas are replaced to join the new port).
    shoal(&h, &["service", "update", "--publish-rm", "80", "web"]);
    let after = inspect(&h, "service", "web")["Endpoint"]["Ports"].clone();
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["TargetPort"] != 80),
        "{after}"
    );
    for i in 0..3 {
        let addr = bed.nodes[i].addr.clone();
        eventually(&format!("port {dynamic} closed on node {}", i + 1), || {
            probe_ns(&outside, &addr, dynamic, 1)[0] == "error ConnectionRefusedError"
        });
    }
    shoal(
        &h,
        &[
            "service",
            "update",
            "--publish-add",
            &format!("{dynamic}:8080"),
            "web",
        ],
    );
    for i in 0..3 {
        let addr = bed.nodes[i].addr.clone();
        eventually(
            &format!("port {dynamic} reopened on node {}", i + 1),
            || summary(&probe_ns(&outside, &addr, dynamic, 10)).0.len() >= 2,
        );
    }

    // Session affinity: a client keeps one replica through the VIP, and a client address
    // through the published port; turned off, both spread again. Replicas are not
    // restarted for it.
    let before_affinity = task_addrs("shoal-lb-web", "eth0");
    shoal(
        &h,
        &[
            "service",
            "update",
            "--session-affinity",
            "client-ip",
            "web",
        ],
    );
    let pretty = shoal(&h, &["service", "inspect", "--pretty", "web"]);
    assert!(pretty.contains("client-ip (timeout 3h0m0s)"), "{pretty}");
    let affinity_client = clients[&1][0];
    let node2 = bed.nodes[1].addr.clone();
    eventually("affinity through the VIP and the published port", || {
        summary(&probe_task(affinity_client, &vip, 8080, 12, "tcp"))
            .0
            .len()
            == 1
            && summary(&probe_ns(&outside, &node2, 8080, 12)).0.len() == 1
    });
    assert_eq!(task_addrs("shoal-lb-web", "eth0"), before_affinity);
    shoal(
        &h,
        &["service", "update", "--session-affinity", "none", "web"],
    );
    eventually("spread again without affinity", || {
        summary(&probe_task(affinity_client, &vip, 8080, 12, "tcp"))
            .0
            .len()
            >= 2
            && summary(&probe_ns(&outside, &node2, 8080, 12)).0.len() >= 2
    });

    // The idle connection still works after a minute: the LB set no timeout of its own,
    // and conntrack keeps the kernel's established timeout.
    let left = Duration::from_secs(62).saturating_sub(idle_start.elapsed());
    std::thread::sleep(left);
    idle.write_all(b"?").unwrap();
    let mut buf = [0u8; 200];
    assert!(idle.read(&mut buf).unwrap() > 0, "idle connection cut");
    let timeout = Command::new("nsenter")
        .args(["-t", &idle_pid.to_string(), "-n", "cat"])
        .arg("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&timeout.stdout).trim(), "432000");
    drop(idle);

    // Scaling 3 -> 6 -> 1 is followed by the LB on every node.
    let probe_pid = clients[&1][0];
    for n in [6usize, 1] {
        shoal(&h, &["service", "scale", &format!("web={n}")]);
        eventually(
            &format!("{n} web replicas balanced from every node"),
            || {
                let want = task_addrs("shoal-lb-web", "eth0");
                want.len() == n
                    && clients.values().all(|pids| {
                        summary(&probe_task(pids[0], &vip, 8080, 6 * n, "tcp")).0 == want
                    })
            },
        );
    }
    shoal(&h, &["service", "scale", "web=3"]);
    eventually("3 replicas again", || {
        task_addrs("shoal-lb-web", "eth0").len() == 3
    });

    // A killed task is replaced, and its address leaves every node's LB.
    let victim = task_pids("shoal-lb-web")
        .into_values()
        .flatten()
        .next()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    eventually("the killed replica replaced and out of the LB", || {
        let want = task_addrs("shoal-lb-web", "eth0");
        want.len() == 3 && summary(&probe_task(probe_pid, &vip, 8080, 20, "tcp")).0 == want
    });

    // A stopping task waits for every node: with one worker's shoald frozen (its session
    // open, its views unacknowledged), the replica that a scale-down removes keeps running
    // until that node is back and has reprogrammed.
    let slot_pid = |slot: &str| {
        task_pids("shoal-lb-web")
            .into_iter()
            .find_map(|(node, pids)| {
                pids.into_iter()
                    .find(|pid| {
                        std::fs::read(format!("/proc/{pid}/environ"))
                            .map(|e| {
                                String::from_utf8_lossy(&e)
                                    .split('\0')
                                    .any(|v| v == format!("SHOAL_TASK_SLOT={slot}"))
                            })
                            .unwrap_or(false)
                    })
                    .map(|pid| (node, pid))
            })
    };
    let (victim_node, victim) = slot_pid("3").expect("a replica in slot 3");
    let frozen = if victim_node == 2 { 3 } else { 2 };
    let frozen_shoald = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args([
                "-f",
                &format!(
                    "shoald --state-dir {}",
                    bed.nodes[frozen - 1].dir.join("state").display()
                ),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse::<i32>()
    .expect("the frozen node's shoald");
    let signal =
        |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen_shoald), sig).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    shoal(&h, &["service", "scale", "web=2"]);
    std::thread::sleep(Duration::from_secs(2));
    let alive = std::path::Path::new(&format!("/proc/{victim}")).exists();
    signal(nix::sys::signal::Signal::SIGCONT);
    assert!(
        alive,
        "the stopping replica got SIGTERM before node {frozen} confirmed"
    );
    eventually(
        "the removed replica stopped once every node confirmed",
        || !std::path::Path::new(&format!("/proc/{victim}")).exists(),
    );
    shoal(&h, &["service", "scale", "web=3"]);
    eventually("3 replicas again", || {
        task_addrs("shoal-lb-web", "eth0").len() == 3
    });

    // Draining a node moves its replicas while a client keeps getting answers: each
    // stopping replica leaves every LB before its SIGTERM.
    let drain_target = bed.nodes[2].name.clone();
    let stream = std::thread::spawn({
        let vip = vip.clone();
        move || probe_task(probe_pid, &vip, 8080, 300, "tcp")
    });
    std::thread::sleep(Duration::from_millis(500));
    shoal(
        &h,
        &["node", "update", "--availability", "drain", &drain_target],
    );
    let answers = stream.join().unwrap();
    let failed: Vec<&String> = answers.iter().filter(|a| a.starts_with("error")).collect();
    if !failed.is_empty() {
        eprintln!("{}", shoal(&h, &["service", "ps", "web"]));
        for n in &bed.nodes {
            let log = std::fs::read_to_string(n.dir.join("shoald.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!(
                "--- {}\n{}",
                n.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!("{answers:?}");
    }
    assert!(
        failed.is_empty(),
        "{} of 300 failed during drain: {failed:?}",
        failed.len()
    );
    eventually("no replica left on the drained node", || {
        !task_pids("shoal-lb-web").contains_key(&3)
    });
    shoal(
        &h,
        &["node", "update", "--availability", "active", &drain_target],
    );

    // A worker's shoald restarted during a stream of connections from a client on the
    // same node loses none (with eBPF, the programs and maps it pinned stay at work).
    let shoald = shoal_integration::bin_dir().join("shoald");
    let local_client = clients[&2][0];
    let stream = std::thread::spawn({
        let vip = vip.clone();
        move || probe_task(local_client, &vip, 8080, 300, "tcp")
    });
    std::thread::sleep(Duration::from_millis(300));
    bed.restart(1, &shoald, flags).unwrap();
    let answers = stream.join().unwrap();
    let failed: Vec<&String> = answers.iter().filter(|a| a.starts_with("error")).collect();
    assert!(
        failed.is_empty(),
        "{} of 300 failed across a restart: {failed:?}",
        failed.len()
    );
    let outside_answers = probe_ns(&outside, &bed.nodes[1].addr, 8080, 10);
    assert!(
        outside_answers.iter().all(|a| !a.starts_with("error")),
        "published port after the restart: {outside_answers:?}"
    );
}

/// The kernel holds one nftables selector for the VIP and three backend slots.
fn check_nft_vips(clients: &BTreeMap<usize, Vec<u32>>, vip: &str) {
    let listing = nft_json(&["-t", &clients[&2][0].to_string(), "-n"], "shoal");
    let sel = elements(&listing, "vips");
    assert!(
        sel.iter()
            .any(|e| e[0] == vip && e[1]["goto"]["target"] == "pick3"),
        "vips map: {sel:?}"
    );
    let slots = elements(&listing, "backends");
    assert_eq!(
        slots.iter().filter(|e| e[0]["concat"][0] == vip).count(),
        3,
        "{slots:?}"
    );
}
