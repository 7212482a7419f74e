//! The eBPF backend on real kernels: the conformance suite, what `bpftool` sees attached
//! and stored, and programs replaced under a stream of connections. The programs act on
//! sockets of processes in the cgroup they are attached to, so the test process moves
//! into a cgroup of its own for each test (one test at a time) and back out afterwards.

use super::conformance::{
    Spaces, answers, ask, in_ns, ip, keys, run_affinity_timeout, run_mesh, run_vips, serve, vips,
};
use super::ebpf::{EbpfOptions, SockLb, cgroup2_mount, join_cgroup};
use super::{LbBackend, Netns};
use serde_json::Value;
use std::net::{SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn can_run(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("it needs root")
    } else if Command::new("bpftool").arg("version").output().is_err() {
        Some("bpftool is not installed (apt-get install bpftool)")
    } else if cgroup2_mount().is_none() {
        Some("no cgroup v2 hierarchy is mounted")
    } else {
        None
    };
    let Some(why) = why else { return true };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true does not allow skipping");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// A cgroup holding this test process and a pin directory, both removed on drop.
struct Attached {
    opts: EbpfOptions,
    back_to: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Attached {
    fn new(tag: &str) -> Attached {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let mount = cgroup2_mount().unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let back_to = mount.join(own.trim_start_matches('/'));
        let opts = EbpfOptions {
            cgroup: mount.join(format!("shoal-lbt-{tag}")),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/shoal-lbt-{tag}")),
        };
        SockLb::unpin_all(&opts.pin_dir);
        join_cgroup(&opts.cgroup, std::process::id()).unwrap();
        Attached {
            opts,
            back_to,
            _serial: serial,
        }
    }

    fn open(&self) -> SockLb {
        SockLb::open(self.opts.clone()).unwrap_or_else(|e| panic!("eBPF backend: {e}"))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        SockLb::unpin_all(&self.opts.pin_dir);
        let _ = std::fs::write(
            self.back_to.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.opts.cgroup);
    }
}

#[test]
fn ebpf_balances_vips() {
    if !can_run("ebpf_balances_vips") {
        return;
    }
    let at = Attached::new("ev");
    run_vips("ebv", &|| Box::new(at.open()));
}

#[test]
fn ebpf_routes_the_mesh() {
    if !can_run("ebpf_routes_the_mesh") {
        return;
    }
    let at = Attached::new("em");
    run_mesh("ebm", &|| Box::new(at.open()));
}

#[test]
fn ebpf_lets_affinity_run_out() {
    if !can_run("ebpf_lets_affinity_run_out") {
        return;
    }
    let at = Attached::new("eba");
    run_affinity_timeout("eba", &|| Box::new(at.open()));
}

fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool (apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What the kernel holds, seen by bpftool: the four programs on the cgroup, and map
/// entries for exactly the programmed VIPs, backends and namespaces.
#[test]
fn bpftool_sees_programs_attached_and_maps_filled() {
    if !can_run("bpftool_sees_programs_attached_and_maps_filled") {
        return;
    }
    let at = Attached::new("tool");
    let spaces = Spaces::new("ebtool", &["a", "b"]);
    let lb = at.open();
    let (a, b) = (
        Netns::Named(spaces.name(0).into()),
        Netns::Named(spaces.name(1).into()),
    );
    let mut table = vips(&[
        ("198.19.9.2", &["198.19.9.3", "198.19.9.4"]),
        ("198.19.9.5", &[]),
    ]);
    table.affinity.insert(ip("198.19.9.2"), 90);
    lb.apply_vips(&a, &table).unwrap();
    let mut shared = vips(&[("198.19.9.2", &["198.19.9.3", "198.19.9.4"])]);
    shared.affinity.insert(ip("198.19.9.2"), 90);
    lb.apply_vips(&b, &shared).unwrap();

    let cgroup = at.opts.cgroup.display().to_string();
    let attached = bpftool(&["cgroup", "show", &cgroup]);
    let mut seen: Vec<(String, String)> = attached
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["attach_type"].as_str().unwrap_or_default().to_string(),
                p["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 8, "{attached}");
    let want: Vec<(String, String)> = [
        ("cgroup_inet4_connect", "shoal_connect4"),
        ("cgroup_inet4_getpeername", "shoal_getpeername4"),
        ("cgroup_inet6_connect", "shoal_connect6"),
        ("cgroup_inet6_getpeername", "shoal_getpeername6"),
        ("cgroup_udp4_recvmsg", "shoal_recvmsg4"),
        ("cgroup_udp4_sendmsg", "shoal_sendmsg4"),
        ("cgroup_udp6_recvmsg", "shoal_recvmsg6"),
        ("cgroup_udp6_sendmsg", "shoal_sendmsg6"),
    ]
    .map(|(t, n)| (t.to_string(), n.to_string()))
    .into();
    assert_eq!(seen, want);

    let dump = |map: &str| -> Vec<Value> {
        let path = at.opts.pin_dir.join(map).display().to_string();
        bpftool(&["map", "dump", "pinned", &path])
            .as_array()
            .unwrap()
            .clone()
    };
    // Two VIPs, one of them idle; two backends; three (namespace, VIP) memberships.
    let svc = dump("shoal_svc");
    assert_eq!(svc.len(), 2, "{svc:?}");
    let counts: Vec<u64> = svc
        .iter()
        .map(|e| e["formatted"]["value"]["count"].as_u64().unwrap())
        .collect();
    assert!(counts.contains(&2) && counts.contains(&0), "{svc:?}");
    // The VIP with backends carries its session affinity timeout; the idle one none.
    let affinity: Vec<(u64, u64)> = svc
        .iter()
        .map(|e| {
            let v = &e["formatted"]["value"];
            (
                v["count"].as_u64().unwrap(),
                v["affinity_s"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        affinity.contains(&(2, 90)) && affinity.contains(&(0, 0)),
        "{svc:?}"
    );
    assert_eq!(dump("shoal_backends").len(), 2);
    assert_eq!(dump("shoal_member").len(), 3);

    // The second namespace ends: its membership goes, the shared VIP stays for the first.
    lb.forget(&b);
    assert_eq!(dump("shoal_member").len(), 2);
    assert_eq!(dump("shoal_backends").len(), 2);
    // A restarted instance keeps the programs it finds attached (same code, same ids)
    // and sweeps namespaces that are gone, and VIPs nobody uses.
    let ids = |v: &Value| -> Vec<u64> {
        let mut ids: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let again = at.open();
    assert_eq!(ids(&bpftool(&["cgroup", "show", &cgroup])), ids(&attached));
    again.sweep(&[]);
    assert!(dump("shoal_member").is_empty());
    assert!(dump("shoal_svc").is_empty());
    assert!(dump("shoal_backends").is_empty());
}

/// Programs replaced (as by an upgraded shoald) while a client connects through a VIP
/// without pause: none of its connections fails, and a connection opened before stays up.
#[test]
fn replacing_the_programs_drops_no_connection() {
    if !can_run("replacing_the_programs_drops_no_connection") {
        return;
    }
    let at = Attached::new("swap");
    let spaces = Spaces::new("ebswap", &["client", "server"]);
    spaces.link(
        0,
        "eth0",
        &["198.19.202.2/24"],
        1,
        "eth0",
        &["198.19.202.10/24", "198.19.202.11/24"],
    );
    let (client, server) = (spaces.name(0).to_string(), spaces.name(1).to_string());
    serve(&server, 80, &[]);
    let ns = Netns::Named(client.clone());
    let vip = SocketAddrV4::new(ip("198.19.202.100"), 80);
    let lb = at.open();
    lb.apply_vips(
        &ns,
        &vips(&[("198.19.202.100", &["198.19.202.10", "198.19.202.11"])]),
    )
    .unwrap();
    let held = in_ns(&client, move || {
        TcpStream::connect_timeout(&vip.into(), Duration::from_secs(2)).unwrap()
    });

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(Mutex::new(Vec::new())),
    );
    let stream = {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match ask(&client, vip) {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failed.lock().unwrap().push(e.to_string());
                        0
                    }
                };
            }
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        // A different recorded cgroup makes the next instance attach anew and replace
        // every link, as changed programs would.
        super::ebpf::forget_cgroup(&at.opts.pin_dir);
        let again = at.open();
        assert!(
            again
                .apply_vips(
                    &ns,
                    &vips(&[("198.19.202.100", &["198.19.202.10", "198.19.202.11"])])
                )
                .is_ok()
        );
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::SeqCst);
    stream.join().unwrap();
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 20, "the stream ran");
    // Still one link per program: the old ones were detached.
    let attached = bpftool(&["cgroup", "show", &at.opts.cgroup.display().to_string()]);
    assert_eq!(attached.as_array().unwrap().len(), 8, "{attached}");
    let mut held = held;
    use std::io::{Read, Write};
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    held.write_all(b"?").unwrap();
    let mut buf = [0u8; 64];
    assert!(held.read(&mut buf).unwrap() > 0);
    // The replaced programs still show the VIP to the socket made before them.
    assert_eq!(held.peer_addr().unwrap(), std::net::SocketAddr::from(vip));
    assert_eq!(
        keys(&answers(&client, vip, 30)),
        ["198.19.202.10", "198.19.202.11"].into()
    );
}

/// A map pinned by another version with another layout is recreated, and the programs
/// are replaced so that they use the new one: VIPs balance again.
#[test]
fn a_pinned_map_of_another_layout_is_recreated() {
    if !can_run("a_pinned_map_of_another_layout_is_recreated") {
        return;
    }
    let at = Attached::new("layout");
    std::fs::create_dir_all(&at.opts.pin_dir).unwrap();
    let svc = at.opts.pin_dir.join("shoal_svc");
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&svc)
        .args([
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "16",
            "name",
            "shoal_svc",
        ])
        .status()
        .unwrap();
    assert!(made.success(), "bpftool map create");
    let spaces = Spaces::new("eblay", &["client", "server"]);
    spaces.link(
        0,
        "eth0",
        &["198.19.203.2/24"],
        1,
        "eth0",
        &["198.19.203.10/24"],
    );
    let (client, server) = (spaces.name(0).to_string(), spaces.name(1).to_string());
    serve(&server, 80, &[]);
    let lb = at.open();
    let info = bpftool(&["map", "show", "pinned", &svc.display().to_string()]);
    assert_eq!(info["bytes_value"], 8, "{info}");
    lb.apply_vips(
        &Netns::Named(client.clone()),
        &vips(&[("198.19.203.100", &["198.19.203.10"])]),
    )
    .unwrap();
    let vip = SocketAddrV4::new(ip("198.19.203.100"), 80);
    assert_eq!(keys(&answers(&client, vip, 5)), ["198.19.203.10"].into());
}
