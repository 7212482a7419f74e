//! Docker's own tools against shoald's Engine API on the 3-node testbed, with the machine's
//! Docker engine running the tasks: the unmodified `docker` CLI forms the swarm (init and
//! join through each node's socket), manages nodes, networks, services and a stack, each
//! checked by traffic or by the CLI's own `--format` output; docker-py does the same through
//! its SDK; bad requests get Docker's status codes and change nothing.

use serde_json::Value;
use shoal_integration::testbed::{TEST_IMAGE as IMAGE, Testbed, require_docker};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The Docker CLI to test with: Debian's (`docker.io`) where it is installed, else the
/// first on PATH. `SHOAL_DOCKER_CLI` names another.
fn docker_cli() -> PathBuf {
    if let Ok(p) = std::env::var("SHOAL_DOCKER_CLI") {
        return p.into();
    }
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.into()
    } else {
        "docker".into()
    }
}

struct Cli {
    bin: PathBuf,
    /// An empty client config, so that nothing of the machine's user leaks in.
    config: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            bin: docker_cli(),
            config: tempfile::tempdir().unwrap(),
        }
    }

    fn raw(&self, host: &str, args: &[&str]) -> Output {
        // `timeout`: a CLI waiting on a route that never answers fails the test, not CI.
        Command::new("timeout")
            .arg("180")
            .arg(&self.bin)
            .args(args)
            .env("DOCKER_HOST", host)
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_CLI_HINTS", "false")
            .output()
            .unwrap()
    }

    /// Runs `docker args` against `host`; its stdout, failing the test on an error.
    fn ok(&self, host: &str, args: &[&str]) -> String {
        let o = self.raw(host, args);
        assert!(
            o.status.success(),
            "docker {args:?} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs a command that must fail; its stderr.
    fn err(&self, host: &str, args: &[&str]) -> String {
        let o = self.raw(host, args);
        assert!(
            !o.status.success(),
            "docker {args:?} should fail, printed {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(90), f);
}

/// One HTTP/1.1 request on a unix socket; (status, body).
fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What an outside client gets from `addr:port` (the routing mesh).
fn get(outside: &str, addr: &str, port: u16) -> String {
    let code = format!(
        "import urllib.request\nprint(urllib.request.urlopen('http://{addr}:{port}/', timeout=3).read().decode().strip())"
    );
    let o = Command::new("ip")
        .args(["netns", "exec", outside, "python3", "-c", &code])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The machine's engine: the containers the nodes' executors made.
fn engine(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn web_command(greeting_var: &str) -> String {
    format!(
        "echo started ${greeting_var}; echo serving on 80 >&2; echo ${greeting_var} > /www/index.html; exec httpd -f -p 80 -h /www"
    )
}

const STACK: &str = r#"version: "3.8"
services:
  web:
    image: shoal-test-busybox:latest
    command: ["sh", "-c", "echo from-web > /www/index.html; exec httpd -f -p 80 -h /www"]
    deploy:
      replicas: 2
    networks: [back]
  client:
    image: shoal-test-busybox:latest
    command: ["sleep", "900907"]
    networks: [back]
networks:
  back:
    driver: overlay
    ipam:
      config:
        - subnet: 198.19.90.0/24
"#;

/// A CA, a server certificate for the node's address and a client certificate, as PEM
/// files under the test's directory.
struct Tls {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl Tls {
    fn make(dir: &Path, server_ip: &str) -> Tls {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            SanType,
        };
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p.to_str().unwrap().to_string()
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |server: bool| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            if server {
                p.subject_alt_names = vec![SanType::IpAddress(server_ip.parse().unwrap())];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            } else {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(true);
        let (client_cert, client_key) = leaf(false);
        Tls {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
        }
    }
}

#[test]
fn the_docker_cli_and_docker_py_drive_a_shoal_swarm() {
    if !require_docker("the_docker_cli_and_docker_py_drive_a_shoal_swarm") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::create("shapi", 3, root.path()).unwrap();
    let shoald = shoal_integration::bin_dir().join("shoald");
    // Node 1 serves the API on TCP too, to holders of a client certificate only.
    let tls = Tls::make(root.path(), &bed.nodes[0].addr);
    let tcp = format!("{}:2376", bed.nodes[0].addr);
    bed.start(
        0,
        &shoald,
        &[
            "--engine-api-tcp",
            &tcp,
            "--tlscacert",
            &tls.ca,
            "--tlscert",
            &tls.server_cert,
            "--tlskey",
            &tls.server_key,
        ],
    )
    .unwrap();
    for i in 1..3 {
        bed.start(i, &shoald, &[]).unwrap();
    }
    let outside = bed.outside_client("out", "198.18.0.203").unwrap();
    let cli = Cli::new();
    let hosts: Vec<String> = bed.nodes.iter().map(|n| n.docker_host()).collect();
    let h = hosts[0].as_str();

    // The CLI negotiates down to the API shoal serves and sees no swarm yet.
    assert_eq!(
        cli.ok(h, &["version", "--format", "{{.Server.APIVersion}}"])
            .trim(),
        "1.41"
    );
    assert_eq!(
        cli.ok(h, &["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .trim(),
        "inactive"
    );

    // swarm init and join, each through the node's own socket.
    let first = bed.nodes[0].addr.clone();
    cli.ok(
        h,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &first,
            "--default-addr-pool",
            "198.19.0.0/16",
        ],
    );
    let worker = cli
        .ok(h, &["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert!(worker.starts_with("SWMTKN-1-"), "{worker}");
    for (i, node) in bed.nodes.iter().enumerate().skip(1) {
        cli.ok(
            &hosts[i],
            &[
                "swarm",
                "join",
                "--token",
                &worker,
                "--advertise-addr",
                &node.addr,
                &format!("{first}:2377"),
            ],
        );
    }
    eventually("three ready nodes in docker node ls", || {
        cli.ok(h, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
            .lines()
            .filter(|l| l.ends_with(" Ready"))
            .count()
            == 3
    });
    assert_eq!(
        cli.ok(
            h,
            &[
                "info",
                "--format",
                "{{.Swarm.ControlAvailable}} {{.Swarm.Nodes}} {{.Swarm.Managers}}"
            ]
        )
        .trim(),
        "true 3 1"
    );
    assert_eq!(
        cli.ok(
            h,
            &[
                "node",
                "ls",
                "--filter",
                "role=manager",
                "--format",
                "{{.Hostname}}"
            ]
        )
        .trim(),
        "node-1"
    );
    assert_eq!(
        cli.ok(
            h,
            &[
                "node",
                "inspect",
                "self",
                "--format",
                "{{.Description.Hostname}}"
            ]
        )
        .trim(),
        "node-1"
    );
    cli.ok(h, &["node", "update", "--label-add", "zone=b", "node-2"]);
    assert_eq!(
        cli.ok(
            h,
            &[
                "node",
                "inspect",
                "node-2",
                "--format",
                "{{index .Spec.Labels \"zone\"}}"
            ]
        )
        .trim(),
        "b"
    );
    cli.ok(h, &["node", "promote", "node-2"]);
    eventually("node-2 a reachable manager", || {
        cli.ok(
            h,
            &[
                "node",
                "inspect",
                "node-2",
                "--format",
                "{{.Spec.Role}} {{.ManagerStatus.Reachability}}",
            ],
        )
        .trim()
            == "manager reachable"
    });
    cli.ok(h, &["node", "demote", "node-2"]);
    assert_eq!(
        cli.ok(
            h,
            &["node", "inspect", "node-2", "--format", "{{.Spec.Role}}"]
        )
        .trim(),
        "worker"
    );
    // A worker's socket answers swarm commands as Docker's does.
    let e = cli.err(&hosts[2], &["service", "ls"]);
    assert!(e.contains("not a swarm manager"), "{e}");

    // Over TCP from another host: with the client certificate, and refused without.
    let over_tcp = |with_cert: bool| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &outside, "timeout", "60"])
            .arg(&cli.bin)
            .env("DOCKER_CONFIG", cli.config.path());
        c.args([
            "-H",
            &format!("tcp://{tcp}"),
            "--tlsverify",
            "--tlscacert",
            &tls.ca,
        ]);
        if with_cert {
            c.args(["--tlscert", &tls.client_cert, "--tlskey", &tls.client_key]);
        }
        c.args(["node", "ls", "--format", "{{.Hostname}}"])
            .output()
            .unwrap()
    };
    let o = over_tcp(true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    assert!(
        !over_tcp(false).status.success(),
        "no client certificate, no API"
    );

    // Networks.
    cli.ok(
        h,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "198.19.80.0/24",
            "--attachable",
            "front",
        ],
    );
    let overlays = cli.ok(
        h,
        &[
            "network",
            "ls",
            "--filter",
            "driver=overlay",
            "--format",
            "{{.Name}} {{.Scope}}",
        ],
    );
    assert!(
        overlays.lines().any(|l| l == "front swarm")
            && overlays.lines().any(|l| l == "ingress swarm"),
        "{overlays}"
    );
    assert_eq!(
        cli.ok(
            h,
            &[
                "network",
                "inspect",
                "front",
                "--format",
                "{{.Driver}} {{(index .IPAM.Config 0).Subnet}} {{.Attachable}}"
            ]
        )
        .trim(),
        "overlay 198.19.80.0/24 true"
    );
    let e = cli.err(h, &["network", "create", "plain"]);
    assert!(
        e.contains("node's own engine"),
        "a bridge network is refused with the reason: {e}"
    );

    // A service, created as a user would (the CLI waits for it to converge).
    let cmd = web_command("GREETING");
    cli.ok(
        h,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "front",
            "--publish",
            "8080:80",
            "--env",
            "GREETING=hello",
            IMAGE,
            "sh",
            "-c",
            &cmd,
        ],
    );
    for n in &bed.nodes {
        eventually(&format!("hello on {}:8080", n.addr), || {
            get(&outside, &n.addr, 8080) == "hello"
        });
    }
    assert_eq!(
        cli.ok(
            h,
            &[
                "service",
                "ls",
                "--filter",
                "name=web",
                "--format",
                "{{.Name}} {{.Mode}} {{.Replicas}}"
            ]
        )
        .trim(),
        "web replicated 2/2"
    );
    let ps = cli.ok(
        h,
        &[
            "service",
            "ps",
            "web",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.CurrentState}}",
        ],
    );
    assert_eq!(
        ps.lines().filter(|l| l.contains(" Running")).count(),
        2,
        "{ps}"
    );
    assert_eq!(cli.ok(h, &["service", "inspect", "web", "--format", "{{(index .Endpoint.Ports 0).PublishedPort}} {{.Spec.TaskTemplate.ContainerSpec.Image}}"]).trim(), format!("8080 {IMAGE}"));
    // The containers carry Swarm's labels.
    let labels = engine(&[
        "ps",
        "--filter",
        "label=com.docker.swarm.service.name=web",
        "--format",
        "{{.Label \"com.docker.swarm.task.name\"}}",
    ]);
    assert_eq!(
        labels.lines().filter(|l| l.starts_with("web.")).count(),
        2,
        "{labels}"
    );

    cli.ok(
        h,
        &[
            "service",
            "update",
            "--env-add",
            "GREETING=bonjour",
            "--publish-add",
            "8081:80",
            "--image",
            "shoal-test-busybox:stopsignal",
            // That image stops with SIGUSR1, which httpd does not take as an end.
            "--stop-signal",
            "SIGTERM",
            "web",
        ],
    );
    eventually("bonjour on 8081", || {
        get(&outside, &first, 8081) == "bonjour"
    });
    eventually("the new image in every running task", || {
        let images = cli.ok(
            h,
            &[
                "service",
                "ps",
                "web",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Image}}",
            ],
        );
        images.lines().count() == 2 && images.lines().all(|l| l == "shoal-test-busybox:stopsignal")
    });
    cli.ok(h, &["service", "scale", "web=3"]);
    eventually("3/3 after scale", || {
        cli.ok(h, &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
            .lines()
            .any(|l| l == "web 3/3")
    });
    // Rollback undoes the last change: the scale.
    cli.ok(h, &["service", "rollback", "web"]);
    eventually("2/2 after rollback", || {
        cli.ok(h, &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
            .lines()
            .any(|l| l == "web 2/2")
    });
    let logs = cli.ok(h, &["service", "logs", "web"]);
    assert!(
        logs.lines().any(|l| l.starts_with("web.")
            && l.contains("@node-")
            && l.ends_with("| started bonjour")),
        "{logs}"
    );
    // Times first, as Docker prints them; stderr lines on the CLI's stderr.
    let o = cli.raw(h, &["service", "logs", "--timestamps", "web"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    let started = out
        .lines()
        .find(|l| l.ends_with("| started bonjour"))
        .unwrap_or_else(|| panic!("{out}"));
    let (stamp, rest) = started.split_once(' ').unwrap();
    assert!(
        stamp.len() == 30 && stamp.ends_with('Z') && rest.starts_with("web."),
        "{started}"
    );
    assert!(err.contains("| serving on 80"), "stderr: {err}");
    assert!(!out.contains("serving on 80"), "stdout: {out}");
    let later = cli.ok(
        h,
        &["service", "logs", "--since", "2099-01-01T00:00:00Z", "web"],
    );
    assert_eq!(later, "", "nothing was written after 2099");

    // Bad input: Docker's status codes, a message naming the object, nothing applied.
    let sock = &bed.nodes[0].engine_socket;
    let (code, body) = http(sock, "POST", "/v1.41/services/create", "{\"Name\": \"x\",");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let spec = |name: &str, port: u16, condition: &str| {
        format!(
            r#"{{"Name":"{name}","TaskTemplate":{{"ContainerSpec":{{"Image":"{IMAGE}","Args":["sleep","900908"]}},"RestartPolicy":{{"Condition":"{condition}"}}}},"EndpointSpec":{{"Ports":[{{"TargetPort":80,"PublishedPort":{port}}}]}}}}"#
        )
    };
    let (code, body) = http(
        sock,
        "POST",
        "/v1.41/services/create",
        &spec("bad", 8090, "sometimes"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("TaskTemplate.RestartPolicy.Condition"),
        "the field is named: {body}"
    );
    let (code, body) = http(
        sock,
        "POST",
        "/v1.41/services/create",
        &spec("clash", 8080, "any"),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("8080") && body.contains("web"), "{body}");
    let (code, body) = http(
        sock,
        "POST",
        "/v1.41/services/web/update?version=1",
        &spec("web", 8080, "any"),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("update out of sequence"), "{body}");
    let (code, body) = http(sock, "GET", "/v1.99/services", "");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("Maximum supported API version is 1.41"),
        "{body}"
    );
    let names = cli.ok(h, &["service", "ls", "--format", "{{.Name}}"]);
    assert_eq!(
        names.trim(),
        "web",
        "nothing of the refused requests was applied"
    );
    assert_eq!(
        cli.ok(
            h,
            &[
                "service",
                "inspect",
                "web",
                "--format",
                "{{len .Endpoint.Ports}}"
            ]
        )
        .trim(),
        "2"
    );
    // What is the node's engine's is refused, not hung.
    let e = cli.err(h, &["ps"]);
    assert!(e.contains("node's own engine"), "{e}");

    cli.ok(h, &["service", "rm", "web"]);
    // Right away, as with Docker, though the service's tasks are still stopping.
    cli.ok(h, &["network", "rm", "front"]);

    // Secrets and configs.
    let pw = root.path().join("pw");
    std::fs::write(&pw, "s3cret").unwrap();
    let pw = pw.to_str().unwrap();
    cli.ok(h, &["secret", "create", "--label", "app=shop", "db_pw", pw]);
    cli.ok(h, &["config", "create", "motd", pw]);
    assert_eq!(
        cli.ok(
            h,
            &[
                "secret",
                "ls",
                "--filter",
                "label=app=shop",
                "--format",
                "{{.Name}}"
            ]
        )
        .trim(),
        "db_pw"
    );
    assert_eq!(
        cli.ok(
            h,
            &[
                "config",
                "inspect",
                "motd",
                "--format",
                "{{printf \"%s\" .Spec.Data}}"
            ]
        )
        .trim(),
        "s3cret"
    );
    let e = cli.err(h, &["secret", "create", "db_pw", pw]);
    assert!(e.contains("db_pw"), "a taken name is refused by name: {e}");
    cli.ok(h, &["secret", "rm", "db_pw"]);
    cli.ok(h, &["config", "rm", "motd"]);
    eventually("web's containers gone", || {
        engine(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=web",
        ])
        .trim()
        .is_empty()
    });

    // A stack whose services call each other by their short names.
    let file = root.path().join("shop.yml");
    std::fs::write(&file, STACK).unwrap();
    cli.ok(
        h,
        &["stack", "deploy", "-c", file.to_str().unwrap(), "shop"],
    );
    assert_eq!(
        cli.ok(h, &["stack", "ls", "--format", "{{.Name}} {{.Services}}"])
            .trim(),
        "shop 2"
    );
    let services = cli.ok(h, &["stack", "services", "shop", "--format", "{{.Name}}"]);
    assert_eq!(
        services.split_whitespace().collect::<Vec<_>>(),
        ["shop_client", "shop_web"]
    );
    eventually("stack ps shows 3 running tasks", || {
        cli.ok(
            h,
            &[
                "stack",
                "ps",
                "shop",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ],
        )
        .lines()
        .filter(|l| l.starts_with("Running"))
        .count()
            == 3
    });
    let client = engine(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.stack.namespace=shop",
        "--filter",
        "label=com.docker.swarm.service.name=shop_client",
    ]);
    let client = client
        .lines()
        .next()
        .expect("the client's container")
        .to_string();
    eventually("the client reaches web by its short name", || {
        engine(&[
            "exec",
            &client,
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80",
        ])
        .contains("from-web")
    });
    cli.ok(h, &["stack", "rm", "shop"]);
    eventually("the stack is gone", || {
        cli.ok(h, &["service", "ls", "-q"]).trim().is_empty()
            && !cli
                .ok(h, &["network", "ls", "--format", "{{.Name}}"])
                .contains("shop_back")
    });

    // docker-py, through its own SDK.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine_api/docker_py.py");
    let o = Command::new("timeout")
        .args(["300", "python3"])
        .arg(&script)
        .env("DOCKER_HOST", h)
        .env("SHOAL_TEST_IMAGE", IMAGE)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker-py checks failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["nodes"], 3, "{report}");
    assert_eq!(report["logs_ok"], true, "{report}");
    eventually("docker-py's service gone", || {
        cli.ok(h, &["service", "ls", "-q"]).trim().is_empty()
    });

    // A worker leaves through its own socket; the manager then removes it.
    cli.ok(&hosts[2], &["swarm", "leave"]);
    assert_eq!(
        cli.ok(
            &hosts[2],
            &["info", "--format", "{{.Swarm.LocalNodeState}}"]
        )
        .trim(),
        "inactive"
    );
    eventually("node-3 down", || {
        cli.ok(h, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
            .lines()
            .any(|l| l == "node-3 Down")
    });
    cli.ok(h, &["node", "rm", "node-3"]);
    assert_eq!(cli.ok(h, &["node", "ls", "-q"]).lines().count(), 2);
}
