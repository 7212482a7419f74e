use super::*;
use crate::stack::compose;

fn src(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

fn env(k: &str) -> Option<String> {
    match k {
        "REPLICAS" => Some("4".into()),
        "TAG" => Some("1.27".into()),
        "RO" => Some("true".into()),
        _ => None,
    }
}

#[test]
fn anchors_merge_keys_and_extensions() {
    let text = r#"
version: "3.9"
x-defaults: &defaults
  image: nginx:${TAG}
  deploy:
    replicas: ${REPLICAS}
services:
  web:
    <<: *defaults
    x-note: not for swarm
    read_only: ${RO}
  api:
    <<: *defaults
    image: api:${TAG:-latest}
"#;
    let l = load(&[src("a.yml", text)], &env).unwrap();
    let web = &l.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(
        web.deploy.as_ref().unwrap().replicas,
        Some(4),
        "cast back to a number"
    );
    assert_eq!(web.read_only, Some(true));
    assert_eq!(l.file.services["api"].image.as_deref(), Some("api:1.27"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn ignored_keys_warn_like_docker_and_unset_variables_too() {
    let text = "services:\n  web:\n    image: x:$NOPE\n    build: .\n    depends_on: [db]\n    restart: always\n    container_name: web\n  db:\n    image: db\n    privileged: true\n";
    let l = load(&[src("a.yml", text)], &env).unwrap();
    assert_eq!(
        l.warnings,
        [
            "WARN: The \"NOPE\" variable is not set. Defaulting to a blank string.",
            "Ignoring unsupported options: build, container_name, depends_on, privileged, restart",
        ]
    );
    assert_eq!(l.file.services["web"].restart.as_deref(), Some("always"));
}

#[test]
fn later_files_win_and_lists_merge_as_docker_does() {
    let base = r#"
services:
  web:
    image: web:1
    command: ["a"]
    environment: {A: "1", B: "2"}
    ports: ["80:80"]
    volumes: ["data:/data", "/etc/x:/etc/x:ro"]
    deploy:
      replicas: 2
      labels: [tier=front]
volumes:
  data:
"#;
    let over = r#"
services:
  web:
    image: web:2
    command: ["b"]
    environment: ["B=3", "C=4"]
    ports: ["443:443"]
    volumes: ["other:/data"]
    deploy:
      replicas: 5
volumes:
  other:
"#;
    let l = load(&[src("a.yml", base), src("b.yml", over)], &env).unwrap();
    let w = &l.file.services["web"];
    assert_eq!(w.image.as_deref(), Some("web:2"));
    assert!(matches!(&w.command, Some(compose::Words::List(c)) if c == &["b"]));
    let envs = w.environment.as_ref().unwrap().entries(&['=']);
    assert_eq!(
        envs,
        [
            ("A".to_string(), Some("1".to_string())),
            ("B".to_string(), Some("3".to_string())),
            ("C".to_string(), Some("4".to_string())),
        ]
    );
    assert_eq!(w.ports.len(), 2, "different published ports are both kept");
    assert_eq!(w.volumes.len(), 2, "/data replaced by target");
    let d = w.deploy.as_ref().unwrap();
    assert_eq!(d.replicas, Some(5));
    assert!(d.labels.is_some(), "deploy merged key by key");
    assert!(l.file.volumes.contains_key("data") && l.file.volumes.contains_key("other"));
}

#[test]
fn merging_follows_docker_clis_rules() {
    let base = r#"
services:
  web:
    image: web:1
    ports: ["8080:80", "9000"]
    cap_add: [NET_ADMIN]
    networks: [front]
    logging:
      driver: syslog
      options: {syslog-address: "udp://198.18.0.5:514"}
    healthcheck:
      test: ["CMD", "a"]
      interval: 5s
    deploy:
      placement:
        constraints: [node.role == worker]
networks:
  front:
  back:
"#;
    let over = r#"
services:
  web:
    ports: [{target: 81, published: 8080}]
    cap_add: [SYS_TIME]
    networks:
      back:
        aliases: [www]
    logging:
      driver: json-file
      options: {max-size: 10m}
    healthcheck:
      test: ["CMD", "b"]
    deploy:
      placement:
        constraints: [node.labels.zone == a]
"#;
    let l = load(&[src("a.yml", base), src("b.yml", over)], &env).unwrap();
    let w = &l.file.services["web"];
    assert_eq!(
        w.ports.len(),
        2,
        "8080 replaced by the later file, 9000 kept"
    );
    assert!(
        w.ports
            .iter()
            .any(|p| matches!(p, compose::Port::Long(l) if l.target == 81)),
        "{:?}",
        w.ports
    );
    assert_eq!(
        w.cap_add.as_deref(),
        Some(&["NET_ADMIN".to_string(), "SYS_TIME".to_string()][..])
    );
    let nets: Vec<String> = w
        .networks
        .as_ref()
        .unwrap()
        .entries()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(nets, ["back", "front"], "list and map forms merged by name");
    let log = w.logging.as_ref().unwrap();
    assert_eq!(log.driver.as_deref(), Some("json-file"));
    assert!(
        !log.options.contains_key("syslog-address"),
        "a new driver drops the old options"
    );
    let hc = w.healthcheck.as_ref().unwrap();
    assert!(
        matches!(&hc.test, Some(compose::Words::List(t)) if t == &["CMD", "b"]),
        "replaced"
    );
    assert_eq!(hc.interval.as_deref(), Some("5s"));
    let c = &w
        .deploy
        .as_ref()
        .unwrap()
        .placement
        .as_ref()
        .unwrap()
        .constraints;
    assert_eq!(
        c,
        &["node.role == worker", "node.labels.zone == a"],
        "appended"
    );
}

#[test]
fn errors_name_the_file_line_and_fix() {
    let base = "services:\n  web:\n    image: x\n";
    let over = "services:\n  web:\n    deploy:\n      placement:\n        constraint: [a==b]\n";
    let err = load(&[src("a.yml", base), src("b.yml", over)], &env).unwrap_err();
    assert!(
        err.starts_with("b.yml:5:9: unknown key \"constraint\" in services.web.deploy.placement"),
        "{err}"
    );
    assert!(err.contains("constraints"), "{err}");
    let err = load(
        &[src(
            "a.yml",
            "services:\n  web:\n    image: ${IMG:?set IMG to the image}\n",
        )],
        &env,
    )
    .unwrap_err();
    assert_eq!(
        err,
        "a.yml: required variable IMG is missing a value: set IMG to the image (at services.web.image)"
    );
    let err = load(
        &[src("a.yml", "services:\n  web:\n    image: \"${\"\n")],
        &env,
    )
    .unwrap_err();
    assert!(
        err.contains("invalid interpolation format for services.web.image"),
        "{err}"
    );
    let err = load(&[src("a.yml", "version: '2.4'\nservices: {}\n")], &env).unwrap_err();
    assert!(err.starts_with("a.yml:1:1: version \"2.4\""), "{err}");
    let err = load(
        &[src(
            "a.yml",
            "services:\n  web:\n    image: x\n    secrets:\n      - source: db\n        targte: x\n",
        )],
        &env,
    )
    .unwrap_err();
    assert_eq!(
        err,
        "a.yml:6:9: unknown key \"targte\" in services.web.secrets: it is in no Compose file format (allowed here: source, target, uid, gid, mode)"
    );
    // A config has no driver in any Compose schema.
    let err = load(
        &[src(
            "a.yml",
            "services:\n  web:\n    image: x\nconfigs:\n  site:\n    file: ./site.conf\n    driver: vault\n",
        )],
        &env,
    )
    .unwrap_err();
    assert!(
        err.starts_with("a.yml:7:5: unknown key \"driver\" in configs.site"),
        "{err}"
    );
    let err = load(&[src("a.yml", "services:\n  web: [x\n")], &env).unwrap_err();
    assert!(err.starts_with("a.yml: "), "{err}");
    let err = load(
        &[src(
            "a.yml",
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: many\n",
        )],
        &env,
    )
    .unwrap_err();
    assert!(
        err.starts_with("a.yml:5:7: services.web.deploy.replicas: invalid type"),
        "{err}"
    );
}

#[test]
fn locate_follows_blocks() {
    let text =
        "services:\n  db:\n    deploy:\n      mode: global\n  web:\n    deploy:\n      mode: x\n";
    let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
    assert_eq!(locate(text, &p("services.web.deploy.mode")), Some((7, 7)));
    assert_eq!(locate(text, &p("services.db.deploy.mode")), Some((4, 7)));
    assert_eq!(locate(text, &p("services.nope")), None);
    // A deeper key of the same name is not the one meant.
    let text = "services:\n  proxy:\n    networks:\n      web:\n  web:\n    imagee: x\n";
    assert_eq!(locate(text, &p("services.web.imagee")), Some((6, 5)));
}

#[test]
fn secrets_and_configs_merge_as_docker_does() {
    let base = r#"
services:
  web:
    image: x
    secrets:
      - s
      - source: t
        target: first
    configs: [c]
secrets:
  s:
    file: ./a.txt
    labels: {tier: db}
  t:
    external: true
configs:
  c:
    file: ./c.conf
"#;
    let over = r#"
services:
  web:
    secrets:
      - source: t
        target: second
      - u
secrets:
  s:
    file: ./b.txt
  u:
    environment: ${VAR:-U}
"#;
    let l = load(&[src("a.yml", base), src("b.yml", over)], &env).unwrap();
    // A later file's top-level entry replaces the earlier one whole (mergo's override of
    // map values), so the first file's labels are gone.
    let s = l.file.secrets["s"].as_ref().unwrap();
    assert_eq!(s.file.as_deref(), Some("./b.txt"));
    assert!(s.labels.is_none());
    assert!(l.file.secrets["t"].is_some());
    assert_eq!(
        l.file.secrets["u"].as_ref().unwrap().environment.as_deref(),
        Some("U"),
        "interpolated"
    );
    // A service's references merge by source, the later file winning, sorted by source.
    let refs: Vec<(String, Option<String>)> = l.file.services["web"]
        .secrets
        .iter()
        .map(|r| {
            let l = r.long();
            (l.source.unwrap(), l.target)
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("s".to_string(), None),
            ("t".to_string(), Some("second".to_string())),
            ("u".to_string(), None)
        ]
    );
    assert_eq!(l.file.services["web"].configs.len(), 1);
}

#[test]
fn a_literal_mode_stays_text_for_octal_and_a_variable_is_a_number() {
    let text = r#"
services:
  web:
    image: x
    secrets:
      - source: a
        mode: 0440
      - source: b
        mode: ${MODE}
      - source: c
        mode: 0o440
secrets:
  a: {external: "${EXT}"}
  b: {external: true}
  c: {external: true}
"#;
    let lookup = |k: &str| match k {
        "MODE" => Some("0440".to_string()),
        "EXT" => Some("yes".to_string()),
        _ => None,
    };
    let l = load(&[src("a.yml", text)], &lookup).unwrap();
    let modes: Vec<Option<compose::Scalar>> = l.file.services["web"]
        .secrets
        .iter()
        .map(|r| r.long().mode)
        .collect();
    assert_eq!(
        modes,
        [
            Some(compose::Scalar::Text("0440".into())),
            // docker/cli's toInt is decimal: a variable's 0440 is 440.
            Some(compose::Scalar::Int(440)),
            Some(compose::Scalar::Int(0o440)),
        ]
    );
    assert!(matches!(
        l.file.secrets["a"].as_ref().unwrap().external,
        Some(compose::External::Flag(true))
    ));
}
