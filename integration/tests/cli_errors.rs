//! Bad input through the CLI: one clear line on stderr, a non-zero exit, and no change to
//! the cluster.

use shoal_integration::LocalCluster;

fn run(c: &LocalCluster, args: &[&str]) -> (bool, String, String) {
    let out = c.shoal(0, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(c: &LocalCluster, args: &[&str]) -> String {
    let (success, out, err) = run(c, args);
    assert!(success, "{args:?} failed: {err}");
    out
}

/// Runs a command that must fail and returns its one stderr line.
fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn refused(c: &LocalCluster, args: &[&str]) -> String {
    let (success, out, err) = run(c, args);
    assert!(!success, "{args:?} succeeded: {out}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: one line on stderr, got: {err}"
    );
    assert!(err.starts_with("Error: "), "{err}");
    err.trim_end().to_string()
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    let c = LocalCluster::start(1, 81).expect("start daemon");
    let ip = c.nodes[0].ip.clone();
    let listen = format!("{ip}:2377");
    // The socket is root-only, like docker.sock.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&c.nodes[0].socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Before a swarm exists.
    let e = refused(&c, &["service", "ls"]);
    assert!(e.contains("not a swarm manager"), "{e}");
    ok(
        &c,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &listen,
            "--default-addr-pool",
            "198.19.0.0/16",
            "--dynamic-port-range",
            "30000-30002",
        ],
    );
    let e = refused(
        &c,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &listen,
        ],
    );
    assert!(e.contains("already part of a swarm"), "{e}");

    let native = [
        "service",
        "create",
        "--runtime",
        "native",
        "--replicas",
        "0",
    ];
    let create = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = native.iter().map(|s| s.to_string()).collect();
        v.extend(["--name".to_string(), name.to_string()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["sleep".to_string(), "600".to_string()]);
        v
    };
    ok(&c, &args(&create("web", &["--publish", "8080:80"])));
    let before_services = ok(&c, &["service", "ls"]);
    let before_networks = ok(&c, &["network", "ls"]);

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["service".into(), "inspect".into(), "ghost".into()],
            "service ghost not found",
        ),
        (
            vec!["service".into(), "rm".into(), "ghost".into()],
            "service ghost not found",
        ),
        (
            vec!["node".into(), "inspect".into(), "ghost".into()],
            "node ghost not found",
        ),
        (
            vec![
                "node".into(),
                "update".into(),
                "--availability".into(),
                "drain".into(),
                "ghost".into(),
            ],
            "node ghost not found",
        ),
        (
            create("bad1", &["--publish", "70000:80"]),
            "published port 70000 is out of range 1-65535",
        ),
        (
            create("bad2", &["--publish", "0"]),
            "target port 0 is out of range 1-65535",
        ),
        (create("bad3", &["--publish", "80:abc"]), "is not a number"),
        (
            create(
                "bad4",
                &["--publish", "published=80,target=80,protocol=icmp"],
            ),
            "icmp",
        ),
        (
            create("bad5", &["--publish", "8080:80"]),
            "port 8080/tcp is already in use by service web",
        ),
        (
            create("bad6", &["--constraint", "node.colour==red"]),
            "unknown attribute",
        ),
        (create("web", &[]), "service name web is already in use"),
        (
            create("bad7", &["--network", "ghostnet"]),
            "network ghostnet not found",
        ),
        (
            create(
                "bad8",
                &["--endpoint-mode", "dnsrr", "--publish", "9090:80"],
            ),
            "dnsrr",
        ),
    ];
    for (argv, expect) in &cases {
        let e = refused(&c, &args(argv));
        assert!(e.contains(expect), "{argv:?}: expected {expect:?} in {e:?}");
    }
    assert_eq!(
        ok(&c, &["service", "ls"]),
        before_services,
        "no refused command changed the services"
    );

    // Networks: an overlapping subnet, a foreign driver.
    ok(
        &c,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.100.0/24",
            "app",
        ],
    );
    let e = refused(
        &c,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.100.128/25",
            "app2",
        ],
    );
    assert!(e.contains("overlaps 198.19.100.0/24"), "{e}");
    let e = refused(&c, &["network", "create", "-d", "bridge", "app3"]);
    assert!(e.contains("overlay"), "{e}");
    let networks = ok(&c, &["network", "ls"]);
    assert_eq!(
        networks.lines().count(),
        before_networks.lines().count() + 1,
        "only app was added"
    );

    // The dynamic range (30000-30002 here) runs out: the error says so at once.
    ok(
        &c,
        &args(&create("d1", &["--publish", "80", "--publish", "81"])),
    );
    ok(&c, &args(&create("d2", &["--publish", "80"])));
    let before = ok(&c, &["service", "ls"]);
    let e = refused(&c, &args(&create("d3", &["--publish", "80"])));
    assert!(e.contains("30000-30002"), "{e}");
    assert_eq!(ok(&c, &["service", "ls"]), before);
    // Removing a service gives its ports back.
    ok(&c, &["service", "rm", "d2"]);
    ok(&c, &args(&create("d3", &["--publish", "80"])));
}
