//! Prometheus metrics of shoald, scraped over HTTP inside the testbed's node namespaces, move
//! with real activity: raft's commit index with writes, load-balancer syncs and programmed
//! VIPs with services, the mesh with a published port, DNS counters with lookups.

use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_root};
use std::process::Command;
use std::time::Duration;

fn scrape(netns: &str) -> String {
    let code = "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:9323/metrics', timeout=3).read().decode())";
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(30), f);
}

#[test]
fn metrics_follow_real_activity() {
    if !require_root("metrics_follow_real_activity") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up_with(
        "shmet",
        2,
        1,
        root.path(),
        &["--metrics-addr", "127.0.0.1:9323"],
    )
    .unwrap();
    let h = bed.nodes[0].host();
    let (m, w) = (bed.nodes[0].netns.clone(), bed.nodes[1].netns.clone());
    let before = scrape(&m);
    assert_eq!(value(&before, "shoal_raft_leader"), 1.0, "{before}");
    assert_eq!(
        value(&before, "shoal_nodes{state=\"ready\"}"),
        2.0,
        "{before}"
    );
    assert!(value(&before, "shoal_raft_term") >= 1.0);
    assert_eq!(
        value(&scrape(&w), "shoal_raft_leader"),
        0.0,
        "a worker leads nothing"
    );
    let commit0 = value(&before, "shoal_raft_commit_index");

    shoal(
        &h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.75.0/24",
            "app",
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
            "--publish",
            "8080:80",
            "sleep",
            "900906",
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
            "900907",
        ],
    );
    eventually(
        "VIPs programmed and the mesh serving the port on both nodes",
        || {
            [&m, &w].iter().all(|ns| {
                let t = scrape(ns);
                value(&t, "shoal_lb_vips") >= 2.0
                    && value(&t, "shoal_mesh_published_ports") == 1.0
                    && value(
                        &t,
                        "shoal_dataplane_syncs_total{table=\"vips\",kind=\"full\"}",
                    ) >= 1.0
            })
        },
    );
    let after = scrape(&m);
    assert!(value(&after, "shoal_raft_commit_index") > commit0);
    assert!(
        value(
            &after,
            "shoal_dataplane_sync_duration_seconds_count{table=\"mesh\"}"
        ) >= 1.0
    );

    // DNS lookups from inside a client task are counted.
    let pid = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", "sleep 900907"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .next()
    .unwrap()
    .to_string();
    let owner = bed
        .nodes
        .iter()
        .find(|n| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| String::from_utf8_lossy(&e).contains(&n.dir.display().to_string()))
        })
        .map(|n| n.netns.clone())
        .unwrap();
    let answered = |t: &str| value(t, "shoal_dns_queries_total{result=\"answered\"}");
    let q0 = answered(&scrape(&owner));
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "-m", "python3", "-c"])
        .arg("import socket\nfor _ in range(5): socket.gethostbyname('web')")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q1 = answered(&scrape(&owner));
    assert!(q1 >= q0 + 5.0, "DNS queries {q0} -> {q1}");
}
