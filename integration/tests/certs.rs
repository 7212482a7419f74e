//! Node certificates renew themselves before they expire, and the node keeps working.

use shoal_integration::{LocalCluster, eventually};
use shoal_manager::ca::parse_node_cert_pem;
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
async fn short_lived_certificates_are_renewed_before_expiry() {
    let c = LocalCluster::start(2, 91).expect("start daemons");
    let ip0 = c.nodes[0].ip.clone();
    let ip1 = c.nodes[1].ip.clone();
    ok(
        &c,
        0,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip0,
            "--listen-addr",
            &format!("{ip0}:2377"),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    ok(&c, 0, &["swarm", "update", "--cert-expiry", "1m"]);
    let token = ok(&c, 0, &["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    ok(
        &c,
        1,
        &[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &ip1,
            "--listen-addr",
            &format!("{ip1}:2377"),
            &c.nodes[0].grpc_addr(),
        ],
    );

    let joined = std::time::Instant::now();
    let cert_path = c.nodes[1].dir.join("state/certificates/swarm-node.crt");
    let first = parse_node_cert_pem(&std::fs::read_to_string(&cert_path).unwrap()).unwrap();
    // 1 minute of validity after a 1 hour backdate.
    assert_eq!(first.not_after_unix - first.not_before_unix, 3600 + 60);
    let renewed = eventually(
        Duration::from_secs(75),
        "a renewed worker certificate",
        || async {
            let pem = std::fs::read_to_string(&cert_path).ok()?;
            let id = parse_node_cert_pem(&pem).ok()?;
            (id.not_after_unix > first.not_after_unix).then_some(id)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(1)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        now < first.not_after_unix,
        "renewed before the old certificate expired"
    );
    assert!(
        joined.elapsed() >= Duration::from_secs(25),
        "renewed after {:?}: not before half of its minute",
        joined.elapsed()
    );
    // And not again right away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = parse_node_cert_pem(&std::fs::read_to_string(&cert_path).unwrap()).unwrap();
    assert_eq!(again, renewed, "one renewal, not a renewal loop");
    assert_eq!(renewed.node_id, first.node_id);
    assert_eq!(renewed.role, first.role);

    // The worker keeps its session with the new certificate: it runs a task placed on it.
    ok(
        &c,
        0,
        &[
            "service",
            "create",
            "--runtime",
            "native",
            "--name",
            "w",
            "--constraint",
            "node.role==worker",
            "sleep",
            "600",
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the task running on the renewed worker",
        || async { ok(&c, 0, &["service", "ls"]).contains("1/1").then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(1)));
}
