//! The conformance suite every load-balancer backend passes, with real namespaces, real
//! kernel tables and real connections: `run_vips` and `run_mesh` take a backend factory
//! (a new instance stands for a restarted shoald). Needs root; without it the tests say
//! why they skip, and under `CI=true` they fail instead.

use super::iptables::Iptables;
use super::nft::Nftables;
use super::{LbBackend, MeshTable, Netns, Synced, VipTable};
use shoal_api::objects::Protocol;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn can_run(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let nft = Command::new("nft").arg("--version").output().is_ok();
    if root && nft {
        return true;
    }
    let why = if root {
        "nft is not installed"
    } else {
        "it needs root"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true does not allow skipping");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// Network namespaces of one test, removed on drop (also when the test fails).
pub(super) struct Spaces(Vec<String>);

impl Spaces {
    pub(super) fn new(tag: &str, names: &[&str]) -> Spaces {
        let prefix = format!("shoal-lbt-{tag}-");
        // Leftovers of a crashed run.
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) {
                    let _ = Command::new("ip").args(["netns", "del", &n]).status();
                }
            }
        }
        let all: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
        for n in &all {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        Spaces(all)
    }

    pub(super) fn name(&self, i: usize) -> &str {
        &self.0[i]
    }

    /// A veth between two namespaces with these addresses.
    pub(super) fn link(
        &self,
        a: usize,
        a_dev: &str,
        a_addrs: &[&str],
        b: usize,
        b_dev: &str,
        b_addrs: &[&str],
    ) {
        let (na, nb) = (self.name(a), self.name(b));
        sh(&[
            "ip", "-n", na, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns",
            nb,
        ]);
        for (ns, dev, addrs) in [(na, a_dev, a_addrs), (nb, b_dev, b_addrs)] {
            for addr in addrs {
                sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }
}

impl Drop for Spaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread inside the namespace.
pub(super) fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// TCP and UDP servers on `port` that answer "<their address> <the client's address>";
/// UDP on each of `udp_on`, so a reply leaves from the address it was sent to, as from a
/// task with one address.
pub(super) fn serve(ns: &str, port: u16, udp_on: &[&str]) {
    let udp_on: Vec<Ipv4Addr> = udp_on.iter().map(|a| ip(a)).collect();
    let (tcp, udps) = in_ns(ns, move || {
        (
            TcpListener::bind(("0.0.0.0", port)).unwrap(),
            udp_on
                .iter()
                .map(|a| UdpSocket::bind((*a, port)).unwrap())
                .collect::<Vec<_>>(),
        )
    });
    std::thread::spawn(move || {
        for mut c in tcp.incoming().flatten() {
            let me = c.local_addr().unwrap().ip();
            let peer = c.peer_addr().unwrap().ip();
            // Hold the connection open until the client closes it (idle tests).
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(format!("{me} {peer}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    for udp in udps {
        std::thread::spawn(move || {
            let me = udp.local_addr().unwrap().ip();
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("udp {} {me}\n", from.ip()).as_bytes(), from);
            }
        });
    }
}

/// One request over TCP from inside `ns`: (server's address, client address it saw).
pub(super) fn ask(ns: &str, to: SocketAddrV4) -> std::io::Result<(String, String)> {
    in_ns(ns, move || {
        let mut c = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"?")?;
        let mut line = String::new();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf)?;
        line.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
        let mut parts = line.split_whitespace();
        Ok((
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        ))
    })
}

pub(super) fn answers(ns: &str, to: SocketAddrV4, n: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..n {
        let (server, client) = ask(ns, to).unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        seen.entry(server).or_default().insert(client);
    }
    seen
}

pub(super) fn vips(entries: &[(&str, &[&str])]) -> VipTable {
    VipTable {
        vips: entries
            .iter()
            .map(|(k, vs)| (ip(k), vs.iter().map(|v| ip(v)).collect()))
            .collect(),
        affinity: BTreeMap::new(),
    }
}

pub(super) fn keys(seen: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<&str> {
    seen.keys().map(String::as_str).collect()
}

/// East-west: a client namespace balances VIPs to backends in a server namespace.
pub fn run_vips(tag: &str, make: &dyn Fn() -> Box<dyn LbBackend>) {
    let spaces = Spaces::new(tag, &["client", "server"]);
    let backends = [
        "198.19.200.10",
        "198.19.200.11",
        "198.19.200.12",
        "198.19.200.13",
    ];
    let addrs: Vec<String> = backends.iter().map(|b| format!("{b}/24")).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    spaces.link(0, "eth0", &["198.19.200.2/24"], 1, "eth0", &addrs);
    let (client, server) = (spaces.name(0).to_string(), spaces.name(1).to_string());
    serve(&server, 80, &backends);
    let ns = Netns::Named(client.clone());
    let vip = SocketAddrV4::new(ip("198.19.200.100"), 80);
    let lb = make();

    // Every backend answers, and each sees the client's own address.
    let first = vips(&[("198.19.200.100", &backends[..3])]);
    assert_eq!(lb.apply_vips(&ns, &first).unwrap(), Synced::Full);
    assert_eq!(lb.apply_vips(&ns, &first).unwrap(), Synced::Unchanged);
    let seen = answers(&client, vip, 40);
    assert_eq!(keys(&seen), backends[..3].iter().copied().collect());
    for clients in seen.values() {
        assert_eq!(
            clients,
            &["198.19.200.2".to_string()].into(),
            "no SNAT east-west"
        );
    }
    // UDP through the same VIP; the reply comes back from the VIP.
    let reply = in_ns(&client, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"?", vip).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    assert!(reply.0.starts_with("udp 198.19.200.2 "), "{}", reply.0);
    assert_eq!(reply.1, std::net::SocketAddr::from(vip));
    // Datagrams of one socket to the VIP stay with one backend (each answer names the
    // backend that got it), as a flow.
    let answered: BTreeSet<String> = in_ns(&client, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (0..20)
            .map(|_| {
                s.send_to(b"?", vip).unwrap();
                let mut buf = [0u8; 64];
                let (n, _) = s.recv_from(&mut buf).unwrap();
                String::from_utf8_lossy(&buf[..n]).trim().to_string()
            })
            .collect()
    });
    assert_eq!(
        answered.len(),
        1,
        "one socket, several backends: {answered:?}"
    );

    // A UDP flow (one socket, one source port, as a resolver or a log shipper keeps) moves
    // off a backend as soon as it leaves the VIP, instead of sending into the void until
    // the flow goes idle.
    let flow = in_ns(&client, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    let served_by = |s: &UdpSocket| -> Option<String> {
        s.send_to(b"?", vip).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.split_whitespace().nth(2).map(String::from)
    };
    let was = served_by(&flow).expect("the UDP flow is answered");
    let rest: Vec<&str> = backends[..3]
        .iter()
        .copied()
        .filter(|b| *b != was)
        .collect();
    lb.apply_vips(&ns, &vips(&[("198.19.200.100", &rest)]))
        .unwrap();
    let moved = (0..30).find_map(|_| {
        let now = served_by(&flow);
        if now.as_deref().is_some_and(|b| rest.contains(&b)) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    assert!(moved.is_some(), "the UDP flow stayed on {was}, which left");
    lb.apply_vips(&ns, &first).unwrap();

    // An IPv6 socket reaches the VIP by its IPv4-mapped address, and sees it as its peer.
    let mapped = std::net::SocketAddrV6::new(vip.ip().to_ipv6_mapped(), 80, 0, 0);
    let (server6, peer6) = in_ns(&client, move || {
        let mut c = TcpStream::connect_timeout(&mapped.into(), Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"?").unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap();
        (
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            c.peer_addr().unwrap(),
        )
    });
    assert!(
        backends[..3].iter().any(|b| server6.starts_with(b)),
        "mapped connect answered by {server6:?}"
    );
    assert_eq!(peer6, std::net::SocketAddr::from(mapped));

    // An established connection, idle across the changes below.
    let mut held = in_ns(&client, move || {
        TcpStream::connect_timeout(&vip.into(), Duration::from_secs(2)).unwrap()
    });
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // The application sees the VIP it asked for, not the backend.
    assert_eq!(
        held.peer_addr().unwrap(),
        std::net::SocketAddr::from(vip),
        "getpeername"
    );

    // One backend replaced: only the new set answers.
    let second = vips(&[("198.19.200.100", &[backends[0], backends[2], backends[3]])]);
    assert!(matches!(
        lb.apply_vips(&ns, &second).unwrap(),
        Synced::Incremental { .. } | Synced::Full
    ));
    let seen = answers(&client, vip, 40);
    assert_eq!(
        keys(&seen),
        [backends[0], backends[2], backends[3]]
            .into_iter()
            .collect()
    );

    // Session affinity: the client keeps one backend for every connection.
    let mut sticky = second.clone();
    sticky.affinity.insert(*vip.ip(), 3600);
    lb.apply_vips(&ns, &sticky).unwrap();
    let seen = answers(&client, vip, 30);
    assert_eq!(seen.len(), 1, "with affinity, one backend: {seen:?}");
    let kept = ip(seen.keys().next().unwrap());
    // Its backend goes: the client moves to another one and stays there.
    sticky.vips.get_mut(vip.ip()).unwrap().remove(&kept);
    lb.apply_vips(&ns, &sticky).unwrap();
    let seen = answers(&client, vip, 30);
    assert_eq!(seen.len(), 1, "with affinity, one backend: {seen:?}");
    assert_ne!(
        ip(seen.keys().next().unwrap()),
        kept,
        "moved off the gone backend"
    );
    // Affinity off: spread again.
    lb.apply_vips(&ns, &second).unwrap();
    assert_eq!(
        answers(&client, vip, 40).len(),
        3,
        "spread without affinity"
    );

    // No running task: refused at once, not a timeout.
    assert!(
        lb.apply_vips(&ns, &vips(&[("198.19.200.100", &[])]))
            .is_ok()
    );
    let asked = std::time::Instant::now();
    let err = ask(&client, vip).unwrap_err();
    // nftables answers with a reset; the socket balancer fails connect() with EPERM.
    let refused = if lb.name() == "ebpf" {
        std::io::ErrorKind::PermissionDenied
    } else {
        std::io::ErrorKind::ConnectionRefused
    };
    assert!(
        err.kind() == refused && asked.elapsed() < Duration::from_secs(1),
        "{err} after {:?}",
        asked.elapsed()
    );

    // A restarted shoald (a new backend instance) takes the table over; the held
    // connection still works, and so do new ones.
    let again = make();
    assert!(matches!(
        again.apply_vips(&ns, &first).unwrap(),
        Synced::Full | Synced::Incremental { .. }
    ));
    held.write_all(b"?").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        held.read(&mut buf).unwrap() > 0,
        "held connection survives the full sync"
    );
    assert_eq!(
        keys(&answers(&client, vip, 40)),
        backends[..3].iter().copied().collect()
    );

    // More backends than the chains made at the last full sync.
    let many: Vec<String> = (20..40).map(|i| format!("198.19.200.{i}")).collect();
    for m in &many {
        sh(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            &format!("{m}/24"),
            "dev",
            "eth0",
        ]);
    }
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(
        again
            .apply_vips(&ns, &vips(&[("198.19.200.100", &many_refs)]))
            .is_ok()
    );
    let seen = answers(&client, vip, 200);
    assert!(
        seen.len() >= 15,
        "20 backends, 200 connections: {} answered",
        seen.len()
    );
    assert!(keys(&seen).iter().all(|k| many_refs.contains(k)));
}

/// Session affinity runs out: with a 2 s timeout a client keeps its backend for quick
/// repeats, and picks afresh after a longer pause. Ten pauses among three backends all
/// landing on one backend would happen once in 20,000 runs.
pub fn run_affinity_timeout(tag: &str, make: &dyn Fn() -> Box<dyn LbBackend>) {
    let spaces = Spaces::new(tag, &["client", "server"]);
    let backends = ["198.19.202.10", "198.19.202.11", "198.19.202.12"];
    let addrs: Vec<String> = backends.iter().map(|b| format!("{b}/24")).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    spaces.link(0, "eth0", &["198.19.202.2/24"], 1, "eth0", &addrs);
    let (client, server) = (spaces.name(0).to_string(), spaces.name(1).to_string());
    serve(&server, 80, &[]);
    let ns = Netns::Named(client.clone());
    let vip = SocketAddrV4::new(ip("198.19.202.100"), 80);
    let lb = make();
    let mut table = vips(&[("198.19.202.100", &backends)]);
    table.affinity.insert(*vip.ip(), 2);
    lb.apply_vips(&ns, &table).unwrap();
    let mut picked = BTreeSet::new();
    for _ in 0..10 {
        let seen = answers(&client, vip, 3);
        assert_eq!(seen.len(), 1, "within the timeout, one backend: {seen:?}");
        picked.extend(seen.into_keys());
        std::thread::sleep(Duration::from_millis(2300));
    }
    assert!(
        picked.len() >= 2,
        "after each timeout the client picks again: {picked:?}"
    );
}

/// Routing mesh: a client outside reaches a published port on the node's address; local
/// backends see the client, remote ones get the node's SNAT address.
pub fn run_mesh(tag: &str, make: &dyn Fn() -> Box<dyn LbBackend>) {
    let spaces = Spaces::new(tag, &["ext", "node", "server"]);
    spaces.link(
        0,
        "eth0",
        &["198.18.200.2/24"],
        1,
        "eth0",
        &["198.18.200.1/24"],
    );
    spaces.link(
        1,
        "sbtest",
        &["198.19.201.1/24"],
        2,
        "eth0",
        &["198.19.201.10/24", "198.19.201.11/24"],
    );
    let (ext, node, server) = (
        spaces.name(0).to_string(),
        spaces.name(1).to_string(),
        spaces.name(2).to_string(),
    );
    sh(&[
        "ip",
        "-n",
        &server,
        "route",
        "add",
        "default",
        "via",
        "198.19.201.1",
    ]);
    in_ns(&node, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap()
    });
    serve(&server, 8080, &["198.19.201.10", "198.19.201.11"]);
    let ns = Netns::Named(node.clone());
    let published = SocketAddrV4::new(ip("198.18.200.1"), 30080);
    let lb = make();

    let mut table = MeshTable {
        ports: [(
            (Protocol::Tcp, 30080),
            [
                SocketAddrV4::new(ip("198.19.201.10"), 8080),
                SocketAddrV4::new(ip("198.19.201.11"), 8080),
            ]
            .into(),
        )]
        .into(),
        local: [ip("198.19.201.10")].into(),
        snat: Some((ip("198.19.201.1"), "sbtest".into())),
        affinity: BTreeMap::new(),
    };
    assert_eq!(lb.apply_mesh(&ns, &table).unwrap(), Synced::Full);
    let seen = answers(&ext, published, 40);
    assert_eq!(
        seen.get("198.19.201.10"),
        Some(&["198.18.200.2".to_string()].into()),
        "a local backend sees the client's address: {seen:?}"
    );
    assert_eq!(
        seen.get("198.19.201.11"),
        Some(&["198.19.201.1".to_string()].into()),
        "a remote backend is reached through the node's address: {seen:?}"
    );
    // The node's own processes reach the published port on its address too.
    let from_node = answers(&node, published, 20);
    assert_eq!(
        keys(&from_node),
        ["198.19.201.10", "198.19.201.11"].into(),
        "from the node itself: {from_node:?}"
    );

    // A published UDP port: a flow from one client socket moves off a backend as soon as
    // that backend leaves the port (local and remote backends alike).
    let udp_port = SocketAddrV4::new(ip("198.18.200.1"), 30053);
    let both: BTreeSet<SocketAddrV4> = [
        SocketAddrV4::new(ip("198.19.201.10"), 8080),
        SocketAddrV4::new(ip("198.19.201.11"), 8080),
    ]
    .into();
    table.ports.insert((Protocol::Udp, 30053), both.clone());
    lb.apply_mesh(&ns, &table).unwrap();
    let flow = in_ns(&ext, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    let served_by = |s: &UdpSocket| -> Option<String> {
        s.send_to(b"?", udp_port).ok()?;
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).ok()?;
        assert_eq!(
            from,
            std::net::SocketAddr::from(udp_port),
            "reply from the port"
        );
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.split_whitespace().nth(2).map(String::from)
    };
    let was = served_by(&flow).expect("the published UDP port answers");
    let rest: BTreeSet<SocketAddrV4> = both
        .iter()
        .filter(|b| b.ip().to_string() != was)
        .copied()
        .collect();
    table.ports.insert((Protocol::Udp, 30053), rest.clone());
    lb.apply_mesh(&ns, &table).unwrap();
    let moved = (0..30).any(|_| {
        let now = served_by(&flow);
        if now
            .as_deref()
            .is_some_and(|b| rest.iter().any(|r| r.ip().to_string() == b))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(moved, "the UDP flow stayed on {was}, which left the port");
    table.ports.remove(&(Protocol::Udp, 30053));
    lb.apply_mesh(&ns, &table).unwrap();

    // A client port used again once its connection has ended (ports come round), after
    // that connection's backend left: the new connection goes to a backend the port has
    // now, not to the one remembered for the old flow.
    let from_port = |port: u16| -> String {
        let script = format!(
            "import socket, struct\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port}))\n\
             s.settimeout(3)\n\
             s.connect(('198.18.200.1', 30080))\n\
             s.sendall(b'?')\n\
             print(s.recv(64).decode().split()[0])\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
             s.close()\n"
        );
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ext}"))
            .args(["python3", "-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = from_port(40001);
    assert!(first.starts_with("198.19.201."), "{first:?}");
    let tcp = (Protocol::Tcp, 30080);
    let before = table.ports[&tcp].clone();
    table
        .ports
        .get_mut(&tcp)
        .unwrap()
        .retain(|b| b.ip().to_string() != first);
    lb.apply_mesh(&ns, &table).unwrap();
    let again = from_port(40001);
    assert!(
        again.starts_with("198.19.201.") && again != first,
        "a reused client port reached {again:?}; {first} left the port"
    );
    table.ports.insert(tcp, before);
    lb.apply_mesh(&ns, &table).unwrap();

    // Session affinity on the port: a client address keeps one backend, and so do the
    // node's own processes; off again, both backends answer.
    table.affinity.insert((Protocol::Tcp, 30080), 3600);
    lb.apply_mesh(&ns, &table).unwrap();
    let seen = answers(&ext, published, 20);
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");
    let seen = answers(&node, published, 20);
    assert_eq!(seen.len(), 1, "the node, one backend: {seen:?}");
    table.affinity.clear();
    lb.apply_mesh(&ns, &table).unwrap();
    assert_eq!(answers(&ext, published, 30).len(), 2, "spread again");

    // A second port added, then the first removed: the port is closed again.
    table.ports.insert(
        (Protocol::Tcp, 30081),
        [SocketAddrV4::new(ip("198.19.201.11"), 8080)].into(),
    );
    table.ports.remove(&(Protocol::Tcp, 30080));
    assert!(matches!(
        lb.apply_mesh(&ns, &table).unwrap(),
        Synced::Incremental { .. } | Synced::Full
    ));
    let other = SocketAddrV4::new(ip("198.18.200.1"), 30081);
    assert_eq!(keys(&answers(&ext, other, 5)), ["198.19.201.11"].into());
    let err = ask(&ext, published).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // A restarted shoald takes over the same table.
    let again = make();
    assert_eq!(again.apply_mesh(&ns, &table).unwrap(), Synced::Full);
    assert_eq!(keys(&answers(&ext, other, 5)), ["198.19.201.11"].into());

    // The tasks are not open to the underlay: routed straight at a task's address (not
    // through a published port), a new connection is dropped.
    sh(&[
        "ip",
        "-n",
        &ext,
        "route",
        "add",
        "198.19.201.0/24",
        "via",
        "198.18.200.1",
    ]);
    let direct = SocketAddrV4::new(ip("198.19.201.11"), 8080);
    let err = in_ns(&ext, move || {
        TcpStream::connect_timeout(&direct.into(), Duration::from_millis(700)).map(|_| ())
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");

    // Leaving the swarm removes the mesh: the port is closed.
    again.remove_mesh(&ns).unwrap();
    let err = ask(&ext, other).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn nftables_balances_vips() {
    if can_run("nftables_balances_vips") {
        run_vips("nftv", &|| Box::new(Nftables::default()));
    }
}

/// The iptables backend needs iptables-restore beside what the suite needs.
fn can_run_iptables(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    match Iptables::available() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why}, and CI=true does not allow skipping")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

#[test]
fn iptables_balances_vips() {
    if can_run_iptables("iptables_balances_vips") {
        run_vips("iptv", &|| Box::new(Iptables::default()));
    }
}

#[test]
fn iptables_routes_the_mesh() {
    if can_run_iptables("iptables_routes_the_mesh") {
        run_mesh("iptm", &|| Box::new(Iptables::default()));
    }
}

#[test]
fn iptables_lets_affinity_run_out() {
    if can_run_iptables("iptables_lets_affinity_run_out") {
        run_affinity_timeout("ipta", &|| Box::new(Iptables::default()));
    }
}

#[test]
fn nftables_lets_affinity_run_out() {
    if can_run("nftables_lets_affinity_run_out") {
        run_affinity_timeout("nfta", &|| Box::new(Nftables::default()));
    }
}

#[test]
fn nftables_routes_the_mesh() {
    if can_run("nftables_routes_the_mesh") {
        run_mesh("nftm", &|| Box::new(Nftables::default()));
    }
}

/// Elements written over netlink read back from the kernel exactly as nft itself writes
/// them: the byte encoding matches the table's types.
#[test]
fn netlink_elements_match_what_nft_writes() {
    if !can_run("netlink_elements_match_what_nft_writes") {
        return;
    }
    let spaces = Spaces::new("nftenc", &["a", "b"]);
    let list = |ns: &str| {
        let out = Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{ns}"),
                "nft",
                "-j",
                "list",
                "ruleset",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut sets: Vec<String> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("map").or_else(|| o.get("set")))
            .map(|m| format!("{} {}", m["name"], m["elem"]))
            .collect();
        sets.sort();
        sets
    };
    let table = vips(&[
        ("198.19.9.2", &["198.19.9.3", "198.19.9.4"]),
        ("198.19.9.5", &[]),
    ]);
    // a: written whole by nft; b: empty first, then filled by an incremental change.
    let lb = Nftables::default();
    let (a, b) = (
        Netns::Named(spaces.name(0).into()),
        Netns::Named(spaces.name(1).into()),
    );
    lb.apply_vips(&a, &table).unwrap();
    lb.apply_vips(&b, &VipTable::default()).unwrap();
    assert!(matches!(
        lb.apply_vips(&b, &table).unwrap(),
        Synced::Incremental { .. }
    ));
    assert_eq!(list(spaces.name(0)), list(spaces.name(1)));

    // A large change still goes as one incremental batch (answers fit the socket).
    let big = VipTable {
        vips: (0..600u32)
            .map(|i| {
                let vip = Ipv4Addr::from(0xc6_13_40_00 + i);
                let b: BTreeSet<Ipv4Addr> = [
                    Ipv4Addr::from(0xc6_13_80_00 + 2 * i),
                    Ipv4Addr::from(0xc6_13_80_01 + 2 * i),
                ]
                .into();
                (vip, b)
            })
            .collect(),
        affinity: BTreeMap::new(),
    };
    lb.apply_vips(&a, &big).unwrap();
    assert!(
        matches!(lb.apply_vips(&b, &big).unwrap(), Synced::Incremental { ops } if ops > 1500),
        "1,800 element changes in one batch"
    );
    assert_eq!(list(spaces.name(0)), list(spaces.name(1)));

    let mesh = MeshTable {
        ports: [(
            (Protocol::Udp, 30053),
            [SocketAddrV4::new(ip("198.19.9.3"), 53)].into(),
        )]
        .into(),
        local: [ip("198.19.9.3")].into(),
        snat: None,
        affinity: BTreeMap::new(),
    };
    lb.apply_mesh(&a, &mesh).unwrap();
    lb.apply_mesh(&b, &MeshTable::default()).unwrap();
    assert!(matches!(
        lb.apply_mesh(&b, &mesh).unwrap(),
        Synced::Incremental { .. }
    ));
    assert_eq!(list(spaces.name(0)), list(spaces.name(1)));
}

/// A node that switches dataplanes (nftables -> iptables -> nftables) leaves nothing of
/// the previous one in a task namespace: its DNAT would race the new one's at the same
/// hook priority.
#[test]
fn a_switched_dataplane_removes_the_previous_ones_rules() {
    if !can_run_iptables("a_switched_dataplane_removes_the_previous_ones_rules") {
        return;
    }
    let spaces = Spaces::new("switch", &["client", "server"]);
    spaces.link(
        0,
        "eth0",
        &["198.19.203.2/24"],
        1,
        "eth0",
        &["198.19.203.10/24", "198.19.203.11/24"],
    );
    let (client, server) = (spaces.name(0).to_string(), spaces.name(1).to_string());
    serve(&server, 80, &[]);
    let ns = Netns::Named(client.clone());
    let vip = SocketAddrV4::new(ip("198.19.203.100"), 80);
    let to_10 = vips(&[("198.19.203.100", &["198.19.203.10"])]);
    let to_11 = vips(&[("198.19.203.100", &["198.19.203.11"])]);
    let run_in = |program: &str, args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{client}"))
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    };

    Nftables::default().apply_vips(&ns, &to_10).unwrap();
    assert_eq!(keys(&answers(&client, vip, 5)), ["198.19.203.10"].into());
    let ipt = Iptables::default();
    ipt.take_over_from("nftables");
    ipt.apply_vips(&ns, &to_11).unwrap();
    assert!(
        !run_in("nft", &["list", "table", "ip", "shoal"])
            .status
            .success(),
        "the nftables table is gone"
    );
    assert_eq!(keys(&answers(&client, vip, 10)), ["198.19.203.11"].into());

    let nft = Nftables::default();
    nft.take_over_from("iptables");
    nft.apply_vips(&ns, &to_10).unwrap();
    let saved = String::from_utf8_lossy(&run_in("iptables-save", &[]).stdout).into_owned();
    assert!(
        !saved.contains("SHOAL-"),
        "iptables chains are gone: {saved}"
    );
    assert_eq!(keys(&answers(&client, vip, 10)), ["198.19.203.10"].into());
}
