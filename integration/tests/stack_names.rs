//! Inside a stack, services reach each other by their Compose names, as with
//! `docker stack deploy`: each service's short name is an alias on each of its stack
//! networks, so `web` and `tasks.agent` resolve there (and HTTP to `http://web:8000/` works),
//! and never on a network where the alias does not hold. Native tasks and a container on
//! the 2-node testbed; names are resolved inside the tasks' own namespaces through
//! 127.0.0.11.

use shoal_integration::shoal_ok as shoal;
use shoal_integration::testbed::{Testbed, require_docker, require_root};
use std::process::Command;
use std::time::Duration;

const SERVER: &str = "import socket\\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8000)); s.listen()\\nwhile True:\\n    c, a = s.accept(); c.recv(65536); c.sendall(b'HTTP/1.0 200 OK\\\\r\\\\n\\\\r\\\\nhello from web\\\\n'); c.close()";

fn compose() -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    command: ["python3", "-c", "{SERVER}"]
    deploy:
      replicas: 2
    networks: [front]
  agent:
    command: sleep 900921
    deploy:
      mode: global
    networks: [front, back]
  client:
    command: sleep 900922
    networks: [front]
  box:
    image: shoal-test-busybox:latest
    command: sleep 900926
    networks: [front]
  lonely:
    command: sleep 900923
    networks:
      back:
        aliases: [hermit]
networks:
  front:
    ipam:
      config:
        - subnet: 198.19.71.0/24
  back:
    ipam:
      config:
        - subnet: 198.19.72.0/24
          ip_range: 198.19.72.128/25
"#
    )
}

fn in_task(marker: &str, code: &str) -> String {
    shoal_integration::python_in_task(marker, code)
}

fn resolve(marker: &str, name: &str) -> String {
    shoal_integration::resolve_in_task(marker, name)
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    shoal_integration::wait_until(what, Duration::from_secs(30), f);
}

fn vip_on(h: &str, service: &str, prefix: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&shoal(h, &["service", "inspect", service])).unwrap();
    v[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["Addr"].as_str())
        .map(|a| a.split('/').next().unwrap().to_string())
        .find(|a| a.starts_with(prefix))
        .unwrap_or_else(|| panic!("{service} has no VIP in {prefix}"))
}

#[test]
fn stack_services_reach_each_other_by_short_name() {
    if !require_root("stack_services_reach_each_other_by_short_name") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::up("shsnm", 2, 1, root.path()).unwrap();
    let h = bed.nodes[0].host();
    let file = root.path().join("names.yml");
    std::fs::write(&file, compose()).unwrap();
    shoal(
        &h,
        &["stack", "deploy", "-c", file.to_str().unwrap(), "names"],
    );

    // The aliases are in the spec, under Docker's field names.
    let v: serde_json::Value =
        serde_json::from_str(&shoal(&h, &["service", "inspect", "names_lonely"])).unwrap();
    let aliases = &v[0]["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"];
    assert_eq!(aliases, &serde_json::json!(["hermit", "lonely"]));

    let web_vip = vip_on(&h, "names_web", "198.19.71.");
    let agent_front = vip_on(&h, "names_agent", "198.19.71.");
    let agent_back = vip_on(&h, "names_agent", "198.19.72.");
    eventually("client resolves web by its short name", || {
        resolve("sleep 900922", "web") == format!("['{web_vip}']")
    });
    eventually("tasks.agent lists both global tasks on front", || {
        let r = resolve("sleep 900922", "tasks.agent");
        r.matches("198.19.71.").count() == 2 && !r.contains("198.19.72.")
    });
    assert_eq!(
        resolve("sleep 900922", "agent"),
        format!("['{agent_front}']")
    );
    eventually("tasks.web lists both replicas", || {
        resolve("sleep 900922", "tasks.web")
            .matches("198.19.71.")
            .count()
            == 2
    });
    // The full name still answers.
    assert_eq!(
        resolve("sleep 900922", "names_web"),
        format!("['{web_vip}']")
    );
    // HTTP by short name, through the VIP.
    eventually("http://web:8000/ answers from the client", || {
        in_task(
            "sleep 900922",
            "import urllib.request\ntry:\n    print(urllib.request.urlopen('http://web:8000/', timeout=3).read().decode().strip())\nexcept Exception as e:\n    print('error', e)",
        ) == "hello from web"
    });

    // The same from inside a container (busybox's nslookup and nc, through 127.0.0.11).
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    if require_docker("stack_services_reach_each_other_by_short_name (containers)") {
        let mut container = String::new();
        eventually("the box container runs", || {
            container = docker(&[
                "ps",
                "-q",
                "--filter",
                "label=com.docker.swarm.service.name=names_box",
            ])
            .trim()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
            !container.is_empty()
        });
        eventually("nslookup web in the container", || {
            docker(&["exec", &container, "nslookup", "web"])
                .contains(&format!("Address: {web_vip}"))
        });
        let tasks = docker(&["exec", &container, "nslookup", "tasks.agent"]);
        assert_eq!(tasks.matches("Address: 198.19.71.").count(), 2, "{tasks}");
        eventually("http://web:8000/ from the container", || {
            docker(&[
                "exec",
                &container,
                "sh",
                "-c",
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 8000",
            ])
            .contains("hello from web")
        });
        let lonely = docker(&["exec", &container, "nslookup", "lonely"]);
        assert!(!lonely.contains("Address: 198.19."), "{lonely}");
    }

    // On back, where web's alias does not hold, `web` does not resolve; agent's does, with
    // its back VIP and its back task addresses only.
    eventually("lonely resolves agent on back", || {
        resolve("sleep 900923", "agent") == format!("['{agent_back}']")
    });
    assert!(resolve("sleep 900923", "web").starts_with("error"));
    assert!(resolve("sleep 900923", "tasks.web").starts_with("error"));
    assert!(resolve("sleep 900923", "client").starts_with("error"));
    let back_tasks = resolve("sleep 900923", "tasks.agent");
    assert!(
        back_tasks.matches("198.19.72.").count() == 2 && !back_tasks.contains("198.19.71."),
        "{back_tasks}"
    );
    // back's ip_range holds its VIPs and task addresses (198.19.72.128/25).
    for addr in back_tasks
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|a| a.trim_matches('\''))
        .chain(std::iter::once(agent_back.as_str()))
    {
        let last: u8 = addr.rsplit('.').next().unwrap().parse().unwrap();
        assert!(last >= 128, "{addr} is outside back's ip_range");
    }
    // A declared alias and the Compose name both answer, on back only.
    eventually("hermit resolves from agent's side of back", || {
        resolve("sleep 900921", "hermit").contains("198.19.72.")
    });
    assert!(resolve("sleep 900922", "hermit").starts_with("error"));
    assert!(resolve("sleep 900922", "lonely").starts_with("error"));

    // Bad input: one clear line each, a non-zero exit, nothing deployed.
    let bad = |name: &str, text: &str, env: &[(&str, &str)], want: &str| {
        let f = root.path().join(format!("{name}.yml"));
        std::fs::write(&f, text).unwrap();
        let o = Command::new(shoal_integration::bin_dir().join("shoal"))
            .args(["-H", &h, "stack", "deploy", "-c", f.to_str().unwrap(), name])
            .envs(env.iter().copied())
            .env_remove("NOPE_TAG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(
            !shoal(&h, &["service", "ls"]).contains(&format!("{name}_")),
            "{name} left services"
        );
    };
    bad(
        "typo",
        "services:\n  a:\n    command: sleep 1\n    deploy:\n      replicaz: 2\n",
        &[],
        "typo.yml:5:7: unknown key \"replicaz\" in services.a.deploy",
    );
    bad(
        "needvar",
        "services:\n  a:\n    image: \"busybox:${NOPE_TAG:?set NOPE_TAG to the release}\"\n",
        &[],
        "required variable NOPE_TAG is missing a value: set NOPE_TAG to the release",
    );
    bad(
        "toobig",
        "services:\n  a:\n    command: sleep 1\n    deploy:\n      resources:\n        reservations:\n          memory: 100000G\n",
        &[],
        "service toobig_a: it reserves 0 CPUs and 100000.0 GiB of memory per task, more than any of the 2 nodes has",
    );
    bad(
        "tmpl",
        "services:\n  a:\n    image: busybox\n    hostname: \"{{.Task.Slott}}\"\n",
        &[],
        "service a: --hostname: template \"{{.Task.Slott}}\"",
    );
    bad(
        "nativevol",
        "services:\n  a:\n    command: sleep 1\n    volumes: [\"data:/data\"]\nvolumes:\n  data:\n    driver_opts: {type: nfs, device: \":/x\"}\n",
        &[],
        "volume \"nativevol_data\": a native task gets a local directory",
    );

    // Ignored keys deploy, with Docker's warning on stderr.
    let f = root.path().join("ignored.yml");
    std::fs::write(
        &f,
        "services:\n  a:\n    command: sleep 900924\n    build: .\n    depends_on: [b]\n    restart: always\n  b:\n    command: sleep 900925\n",
    )
    .unwrap();
    let o = Command::new(shoal_integration::bin_dir().join("shoal"))
        .args([
            "-H",
            &h,
            "stack",
            "deploy",
            "-c",
            f.to_str().unwrap(),
            "ign",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Ignoring unsupported options: build, depends_on, restart"
    );
    // --prune removes what the files no longer name; `-c -` reads standard input.
    let mut child = Command::new(shoal_integration::bin_dir().join("shoal"))
        .args(["-H", &h, "stack", "deploy", "--prune", "-c", "-", "ign"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"services:\n  b:\n    command: sleep 900925\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Removing service ign_a"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let ls = shoal(&h, &["stack", "services", "ign"]);
    assert!(ls.contains("ign_b") && !ls.contains("ign_a"), "{ls}");

    shoal(&h, &["stack", "rm", "names"]);
    shoal(&h, &["stack", "rm", "ign"]);
}
