//! The embedded DNS server answers each task on 127.0.0.11: services (VIP, or task
//! addresses in dnsrr mode), `tasks.<service>`, scoped to the networks the task shares.

use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_root};
use std::process::Command;
use std::time::Duration;

fn resolve(marker: &str, name: &str) -> String {
    shoal_integration::resolve_in_task(marker, name)
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(20), f);
}

#[test]
fn tasks_resolve_services_on_their_networks() {
    if !require_root("tasks_resolve_services_on_their_networks") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::up("shdns", 2, 1, root.path()).unwrap();
    let h = bed.nodes[0].host();
    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.80.0/24",
            "app",
        ],
    );
    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.81.0/24",
            "other",
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
            "web",
            "--replicas",
            "2",
            "--network",
            "app",
            "sleep",
            "801",
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
            "db",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "2",
            "--network",
            "app",
            "sleep",
            "802",
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
            "803",
        ],
    );
    eventually("5 running tasks", || {
        let ls = shoal(&h, &["service", "ls"]);
        ls.contains("2/2") && ls.matches("2/2").count() == 2 && ls.contains("1/1")
    });
    let vip = {
        let inspect: serde_json::Value =
            serde_json::from_str(&shoal(&h, &["service", "inspect", "web"])).unwrap();
        inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    eventually("web resolves to its VIP from a db task", || {
        resolve("sleep 802", "web") == format!("['{vip}']")
    });
    let tasks = resolve("sleep 802", "tasks.web");
    assert_eq!(tasks.matches("198.19.80.").count(), 2, "tasks.web: {tasks}");
    let db = resolve("sleep 801", "db");
    assert_eq!(db.matches("198.19.80.").count(), 2, "dnsrr db: {db}");
    assert!(!db.contains(&vip));
    assert!(
        resolve("sleep 803", "web").starts_with("error"),
        "another network can't resolve web"
    );
    assert!(
        resolve("sleep 801", "lone").starts_with("error"),
        "nor web the other network's service"
    );

    // Scale web down: DNS follows.
    shoal(&h, &["service", "scale", "web=1"]);
    eventually("tasks.web with one address", || {
        resolve("sleep 802", "tasks.web")
            .matches("198.19.80.")
            .count()
            == 1
    });

    // A task's own --dns servers answer the names that are not the cluster's: a tiny
    // resolver on the underlay answers every A query with 198.18.0.99.
    let upstream = bed.outside_client("up", "198.18.0.203").unwrap();
    let server = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.18.0.203', 53))\nwhile True:\n    q, a = s.recvfrom(512)\n    end = q.index(0, 12) + 5\n    r = q[:2] + bytes([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]) + q[12:end] + bytes([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 0, 99])\n    s.sendto(r, a)";
    let mut responder = Command::new("ip")
        .args(["netns", "exec", &upstream, "python3", "-c", server])
        .spawn()
        .unwrap();
    shoal(
        &h,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "asker",
            "--network",
            "app",
            "--dns",
            "198.18.0.203",
            "--dns-search",
            "corp.example",
            "sleep",
            "804",
        ],
    );
    eventually("the task's own resolver answers an outside name", || {
        resolve("sleep 804", "printer.corp.example") == "['198.18.0.99']"
    });
    assert_eq!(
        resolve("sleep 804", "web"),
        format!("['{vip}']"),
        "cluster names still come from the cluster"
    );
    let _ = responder.kill();
    let _ = responder.wait();
}
