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

/// `--format` and `-f/--filter` end to end: Docker's documented templates and filters
/// against two real shoalds (a manager and a worker on 127.0.0.83-84).
#[test]
fn format_and_filter_like_docker() {
    let c = LocalCluster::start(2, 83).expect("start daemons");
    let ip = c.nodes[0].ip.clone();
    ok(
        &c,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    let token = ok(&c, &["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let wip = c.nodes[1].ip.clone();
    let joined = c.shoal(
        1,
        &[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &wip,
            "--listen-addr",
            &format!("{wip}:2377"),
            &c.nodes[0].grpc_addr(),
        ],
    );
    assert!(
        joined.status.success(),
        "join: {}",
        String::from_utf8_lossy(&joined.stderr)
    );

    ok(
        &c,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.101.0/24",
            "--label",
            "usage=prod",
            "backend",
        ],
    );
    let native = ["service", "create", "--runtime", "native"];
    let create = |extra: &[&str]| {
        let mut v: Vec<&str> = native.to_vec();
        v.extend(extra);
        v.extend(["sleep", "600"]);
        ok(&c, &v);
    };
    create(&["--name", "web", "--replicas", "2", "--label", "project=a"]);
    create(&["--name", "top", "--mode", "global"]);
    create(&[
        "--name",
        "shop_db",
        "--replicas",
        "0",
        "--label",
        "com.docker.stack.namespace=shop",
    ]);

    // docs/reference/commandline/service_ls.md, once every task runs.
    shoal_integration::wait_until(
        "services running",
        std::time::Duration::from_secs(30),
        || {
            run(
                &c,
                &[
                    "service",
                    "ls",
                    "--format",
                    "{{.ID}}: {{.Mode}} {{.Replicas}}",
                ],
            )
            .1
            .lines()
            .filter(|l| l.ends_with(" 2/2"))
            .count()
                == 2
        },
    );
    let web_id = ok(&c, &["service", "inspect", "-f", "{{.ID}}", "web"])
        .trim()
        .to_string();
    let top_id = ok(&c, &["service", "inspect", "--format", "{{.ID}}", "top"])
        .trim()
        .to_string();
    assert_eq!(
        ok(
            &c,
            &[
                "service",
                "ls",
                "--format",
                "{{.ID}}: {{.Mode}} {{.Replicas}}"
            ]
        ),
        format!(
            "{}: replicated 0/0\n{}: global 2/2\n{}: replicated 2/2\n",
            &ok(&c, &["service", "inspect", "-f", "{{.ID}}", "shop_db"])[..12],
            &top_id[..12],
            &web_id[..12]
        )
    );
    assert_eq!(
        ok(&c, &["service", "ls", "-q", "-f", "mode=global"]),
        format!("{}\n", &top_id[..12])
    );
    assert_eq!(
        ok(
            &c,
            &[
                "service",
                "ls",
                "-f",
                "name=w",
                "-f",
                "name=t",
                "--format",
                "{{.Name}}"
            ]
        ),
        "top\nweb\n"
    );
    assert_eq!(
        ok(
            &c,
            &["service", "ls", "-f", "label=project=a", "--format", "json"]
        ),
        format!(
            "{{\"ID\":\"{}\",\"Image\":\"sleep 600\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"2/2\"}}\n",
            &web_id[..12]
        )
    );
    assert_eq!(
        ok(
            &c,
            &[
                "service",
                "ls",
                "-f",
                "name=web",
                "--format",
                "table {{.Name}}\\t{{.Image}}"
            ]
        ),
        "NAME      IMAGE\nweb       sleep 600\n"
    );

    // Tasks: docs/reference/commandline/service_ps.md and node_ps.md.
    assert_eq!(
        ok(
            &c,
            &["service", "ps", "--format", "{{.Name}}: {{.Image}}", "web"]
        ),
        "web.1: sleep 600\nweb.2: sleep 600\n"
    );
    let on = |node: &str| {
        ok(
            &c,
            &[
                "service",
                "ps",
                "-f",
                &format!("node={node}"),
                "--format",
                "{{.Node}}",
                "web",
                "top",
            ],
        )
    };
    let mine = on("self");
    assert!(
        !mine.is_empty() && mine.lines().all(|l| l == "node-1"),
        "{mine}"
    );
    let theirs = on("node-2");
    assert!(
        !theirs.is_empty() && theirs.lines().all(|l| l == "node-2"),
        "{theirs}"
    );
    assert_eq!(mine.lines().count() + theirs.lines().count(), 4);
    let top_on_2 = ok(
        &c,
        &[
            "node",
            "ps",
            "node-2",
            "-f",
            "name=top",
            "-f",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.DesiredState}}",
        ],
    );
    assert_eq!(
        top_on_2,
        "top.node-2-id Running\n".replace("node-2-id", &node_id(&c, "node-2"))
    );
    assert_eq!(
        ok(&c, &["node", "ps", "-q", "-f", "desired-state=shutdown"]),
        "",
        "nothing has stopped"
    );

    // Nodes: docs/reference/commandline/node_ls.md.
    assert_eq!(
        ok(
            &c,
            &[
                "node",
                "ls",
                "-f",
                "role=manager",
                "--format",
                "{{.Hostname}} {{.Self}} {{.ManagerStatus}} {{.Status}}"
            ]
        ),
        "node-1 true Leader Ready\n"
    );
    assert_eq!(
        ok(&c, &["node", "ls", "-q", "-f", "role=worker"]),
        format!("{}\n", node_id(&c, "node-2"))
    );
    assert_eq!(
        ok(
            &c,
            &[
                "node",
                "ls",
                "-f",
                "membership=accepted",
                "--format",
                "{{.ID}}: {{.Hostname}} {{.TLSStatus}}"
            ]
        )
        .lines()
        .count(),
        2
    );
    assert_eq!(
        ok(
            &c,
            &[
                "node",
                "inspect",
                "self",
                "-f",
                "{{.Description.Hostname}} {{.Spec.Role}}"
            ]
        ),
        "node-1 manager\n"
    );

    // Networks.
    assert_eq!(
        ok(
            &c,
            &[
                "network",
                "ls",
                "-f",
                "label=usage=prod",
                "--format",
                "{{.Name}} {{.Label \"usage\"}} {{.Driver}} {{.Scope}}"
            ]
        ),
        "backend prod overlay swarm\n"
    );
    assert_eq!(
        ok(
            &c,
            &[
                "network",
                "inspect",
                "-f",
                "{{.Spec.Name}} {{index .Spec.Labels \"usage\"}}",
                "backend"
            ]
        ),
        "backend prod\n"
    );

    // Inspect: one line per object, Docker's field names.
    assert_eq!(
        ok(
            &c,
            &[
                "service",
                "inspect",
                "-f",
                "{{.Spec.Name}} {{index .Spec.Labels \"project\"}}",
                "web",
                "top"
            ]
        ),
        "web a\ntop <no value>\n"
    );
    let vips = ok(
        &c,
        &[
            "service",
            "inspect",
            "-f",
            "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}",
            "web",
        ],
    );
    assert_eq!(vips.trim(), "", "web has no network, so no VIP: {vips}");

    // Stacks.
    assert_eq!(
        ok(&c, &["stack", "ls", "--format", "{{.Name}}: {{.Services}}"]),
        "shop: 1\n"
    );
    assert_eq!(
        ok(
            &c,
            &[
                "stack",
                "services",
                "shop",
                "--format",
                "{{.Name}} {{.Mode}}"
            ]
        ),
        "shop_db replicated\n"
    );
    assert_eq!(
        ok(
            &c,
            &["stack", "ps", "-q", "-f", "desired-state=running", "shop"]
        ),
        ""
    );

    // Refusals: one line, non-zero exit, like Docker's.
    let e = refused(&c, &["service", "ls", "-f", "foo=bar"]);
    assert_eq!(e, "Error: invalid filter 'foo'");
    let e = refused(&c, &["node", "ls", "-f", "role=boss"]);
    assert!(e.contains("invalid filter 'role=boss'"), "{e}");
    let e = refused(&c, &["service", "ps", "-f", "name", "web"]);
    assert!(
        e.contains("bad format of filter (expected name=value)"),
        "{e}"
    );
    let e = refused(&c, &["service", "ls", "--format", "{{.Name"]);
    assert!(e.starts_with("Error: template parsing error: "), "{e}");
    let e = refused(&c, &["service", "ls", "--format", "{{.Nope}}"]);
    assert_eq!(
        e,
        "Error: template parsing error: can't evaluate field Nope"
    );
    let e = refused(&c, &["network", "inspect", "-f", "{{.Spec.Name", "backend"]);
    assert!(e.starts_with("Error: template parsing error: "), "{e}");
    let e = refused(
        &c,
        &["service", "inspect", "--pretty", "-f", "{{.ID}}", "web"],
    );
    assert_eq!(
        e,
        "Error: --format is incompatible with human friendly format"
    );
}

/// `secret` and `config` end to end, and `--secret`/`--config` on services: Docker's output,
/// and every refusal one line that creates nothing (one shoald on 127.0.0.87).
#[test]
fn secrets_and_configs_from_the_cli() {
    let c = LocalCluster::start(1, 87).expect("start daemon");
    let ip = c.nodes[0].ip.clone();
    ok(
        &c,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &format!("{ip}:2377"),
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    let file = |name: &str, data: &[u8]| {
        let path = c.root().join(name);
        std::fs::write(&path, data).unwrap();
        path.to_string_lossy().into_owned()
    };
    const PASSWORD: &str = "hunter2-never-printed";
    let pw = file("pw", PASSWORD.as_bytes());
    let site = file("site.conf", b"port=80\n");
    let empty = file("empty", b"");
    let big = file("big", &vec![b'x'; 500 * 1024]);
    let missing = c.root().join("missing").to_string_lossy().into_owned();

    let before_secrets = ok(&c, &["secret", "ls"]);
    let before_configs = ok(&c, &["config", "ls"]);
    assert_eq!(before_secrets.lines().count(), 1, "{before_secrets}");
    for (argv, expect) in [
        (
            vec!["secret", "create", "db", missing.as_str()],
            "cannot read",
        ),
        (vec!["secret", "create", "db", empty.as_str()], "is empty"),
        (vec!["secret", "create", "db", big.as_str()], "too large"),
        (
            vec!["secret", "create", "bad/name", pw.as_str()],
            "invalid secret name",
        ),
        (
            vec!["secret", "create", "-d", "vault", "db"],
            "not available",
        ),
        (vec!["secret", "create", "db"], "no data"),
        (
            vec![
                "config",
                "create",
                "--template-driver",
                "jinja",
                "site",
                site.as_str(),
            ],
            "template driver \"jinja\" is unknown",
        ),
        (
            vec!["secret", "ls", "-f", "driver=x"],
            "invalid filter 'driver'",
        ),
        (vec!["config", "inspect", "ghost"], "config ghost not found"),
    ] {
        let e = refused(&c, &argv);
        assert!(e.contains(expect), "{argv:?}: expected {expect:?} in {e:?}");
    }
    assert_eq!(ok(&c, &["secret", "ls"]), before_secrets);
    assert_eq!(ok(&c, &["config", "ls"]), before_configs);

    let secret_id = ok(&c, &["secret", "create", "-l", "env=prod", "db", &pw])
        .trim()
        .to_string();
    let config_id = ok(&c, &["config", "create", "site", &site])
        .trim()
        .to_string();
    let e = refused(&c, &["secret", "create", "db", &pw]);
    assert!(e.contains("secret name db is already in use"), "{e}");
    assert_eq!(ok(&c, &["secret", "ls", "-q"]), format!("{secret_id}\n"));
    assert_eq!(ok(&c, &["config", "ls", "-q"]), format!("{config_id}\n"));
    assert_eq!(
        ok(
            &c,
            &[
                "secret",
                "ls",
                "-f",
                "label=env=prod",
                "--format",
                "{{.Name}} {{.Label \"env\"}}"
            ]
        ),
        "db prod\n"
    );
    let table = ok(&c, &["secret", "ls"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&format!("{secret_id}   db ")), "{table}");

    // Inspect never shows a secret's data; a config's is base64, and text with --pretty.
    let inspect = ok(&c, &["secret", "inspect", "db"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(json[0]["ID"], secret_id.as_str());
    assert_eq!(json[0]["Spec"]["Name"], "db");
    assert!(
        !inspect.contains(PASSWORD) && !inspect.contains("Data"),
        "{inspect}"
    );
    let pretty = ok(&c, &["secret", "inspect", "--pretty", "db"]);
    assert!(
        pretty.contains("Name:              db\nLabels:\n - env=prod\n"),
        "{pretty}"
    );
    assert!(!pretty.contains(PASSWORD), "{pretty}");
    assert_eq!(
        ok(&c, &["config", "inspect", "-f", "{{.Spec.Data}}", "site"]),
        "cG9ydD04MAo=\n"
    );
    assert!(ok(&c, &["config", "inspect", "--pretty", "site"]).ends_with("Data:\nport=80\n\n"));

    // Services: references by name, Docker's fields in inspect.
    let create = |name: &str, extra: &[&str]| {
        let mut v = vec![
            "service",
            "create",
            "--runtime",
            "native",
            "--replicas",
            "0",
        ];
        v.extend(["--name", name]);
        v.extend(extra);
        v.extend(["sleep", "600"]);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    ok(
        &c,
        &args(&create(
            "web",
            &[
                "--secret",
                "db",
                "--config",
                "source=site,target=/etc/site.conf,mode=0440",
            ],
        )),
    );
    let refs = ok(
        &c,
        &[
            "service",
            "inspect",
            "-f",
            "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
            "web",
        ],
    );
    let refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
    assert_eq!(
        refs,
        serde_json::json!([{
            "File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 292},
            "SecretID": secret_id,
            "SecretName": "db"
        }])
    );
    let pretty = ok(&c, &["service", "inspect", "--pretty", "web"]);
    assert!(
        pretty.contains("Configs:\n Target:            /etc/site.conf\n  Source:           site\nSecrets:\n Target:            db\n  Source:           db\n"),
        "{pretty}"
    );
    let before_services = ok(&c, &["service", "ls"]);
    for (argv, expect) in [
        (
            create("bad1", &["--secret", "ghost"]),
            "secret ghost not found",
        ),
        (
            create("bad2", &["--secret", "source=db,target=../../etc/shadow"]),
            "climbs out of /run/secrets",
        ),
        (
            create(
                "bad3",
                &["--secret", "db", "--secret", "source=db,target=db"],
            ),
            "both target /run/secrets/db",
        ),
        (
            create("bad4", &["--secret", "source=db,mode=440"]),
            "leading 0",
        ),
        (
            [
                "service",
                "update",
                "--secret-add",
                "source=db,target=db",
                "web",
            ]
            .map(String::from)
            .to_vec(),
            "both target /run/secrets/db",
        ),
        (
            ["service", "update", "--config-rm", "ghost", "web"]
                .map(String::from)
                .to_vec(),
            "--config-rm ghost: the service has no config ghost",
        ),
        (
            ["secret", "rm", "db"].map(String::from).to_vec(),
            "in use by the following service: web",
        ),
        (
            ["secret", "rm", "ghost", "db"].map(String::from).to_vec(),
            "secret ghost not found",
        ),
    ] {
        let e = refused(&c, &args(&argv));
        assert!(e.contains(expect), "{argv:?}: expected {expect:?} in {e:?}");
    }
    assert_eq!(ok(&c, &["service", "ls"]), before_services);
    assert_eq!(ok(&c, &["secret", "ls", "-q"]), format!("{secret_id}\n"));

    // Once the service lets go of them, both can be removed; rm prints each name.
    ok(
        &c,
        &[
            "service",
            "update",
            "--secret-rm",
            "db",
            "--config-rm",
            "site",
            "web",
        ],
    );
    assert_eq!(ok(&c, &["secret", "rm", "db"]), "db\n");
    assert_eq!(ok(&c, &["config", "rm", "site"]), "site\n");
    assert_eq!(ok(&c, &["secret", "ls", "-q"]), "");
}

fn node_id(c: &LocalCluster, node: &str) -> String {
    ok(c, &["node", "inspect", "-f", "{{.ID}}", node])
        .trim()
        .to_string()
}
