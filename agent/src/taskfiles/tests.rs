//! Which files a task gets, and the store they are kept in.

use super::*;
use shoal_api::objects::Driver;
use shoal_api::secrets::{
    Config, ConfigReference, ConfigSpec, SecretPayload, SecretReference, SecretSpec,
};
use std::path::Path;

fn task(secrets: Vec<SecretReference>, configs: Vec<ConfigReference>, env: &[&str]) -> Task {
    let mut t: Task = serde_json::from_value(serde_json::json!({
        "ID": "t1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
        "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
        "Spec": {"ContainerSpec": {"Image": "img"}, "Runtime": "docker"},
        "SpecVersion": {"Index": 1},
        "Status": {"Timestamp": "", "State": "assigned"},
        "DesiredState": "running"
    }))
    .unwrap();
    t.spec.container_spec.secrets = secrets;
    t.spec.container_spec.configs = configs;
    t.spec.container_spec.env = env.iter().map(|s| s.to_string()).collect();
    t
}

fn secret_ref(id: &str, name: &str, target: &str) -> SecretReference {
    SecretReference {
        file: Some(FileTarget::new(target)),
        secret_id: id.into(),
        secret_name: name.into(),
    }
}

fn config_ref(id: &str, name: &str, target: &str) -> ConfigReference {
    ConfigReference {
        file: Some(FileTarget::new(target)),
        config_id: id.into(),
        config_name: name.into(),
    }
}

fn golang() -> Option<Driver> {
    Some(Driver {
        name: GOLANG_TEMPLATE_DRIVER.into(),
        options: Default::default(),
    })
}

fn secret(id: &str, name: &str, data: &str, templating: Option<Driver>) -> SecretPayload {
    SecretPayload {
        id: id.into(),
        spec: SecretSpec {
            name: name.into(),
            templating,
            ..Default::default()
        },
        data: SensitiveBytes::new(data.as_bytes().to_vec()),
    }
}

fn config(id: &str, name: &str, data: &str, templating: Option<Driver>) -> Config {
    let spec = ConfigSpec {
        name: name.into(),
        data: data.as_bytes().to_vec(),
        templating,
        ..Default::default()
    };
    serde_json::from_value(serde_json::json!({
        "ID": id, "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
        "Spec": spec
    }))
    .unwrap()
}

fn view(secrets: Vec<SecretPayload>, configs: Vec<Config>) -> NodeView {
    let mut v: NodeView = serde_json::from_value(serde_json::json!({
        "node": null, "tasks": [], "networks": [], "managers": [],
        "endpoints": [{"service_id": "s1", "service_name": "web", "mode": "vip", "ports": [], "virtual_ips": [], "backends": []}],
        "heartbeat_period_ns": 5000000000u64, "data_path_port": 4789
    }))
    .unwrap();
    v.secrets = secrets;
    v.configs = configs;
    v
}

fn text(f: &TaskFile) -> &str {
    std::str::from_utf8(f.data.as_slice()).unwrap()
}

#[test]
fn a_task_gets_its_secrets_and_configs_at_their_targets_with_owner_and_mode() {
    let mut owned = secret_ref("s-db", "db_password", "db");
    owned.file = Some(FileTarget {
        name: "db".into(),
        uid: "1000".into(),
        gid: "".into(),
        mode: 0o400,
    });
    let t = task(
        vec![owned, secret_ref("s-key", "tls_key", "/etc/ssl/key.pem")],
        vec![config_ref("c-app", "app_conf", "app.conf")],
        &[],
    );
    let v = view(
        vec![
            secret("s-db", "db_password", "hunter2", None),
            secret("s-key", "tls_key", "KEY", None),
            secret("s-other", "other", "not for this task", None),
        ],
        vec![config("c-app", "app_conf", "port=80\n", None)],
    );
    let ctx = crate::template::context(&t, &v);
    let files = files_for(&t, &v, &ctx).unwrap();
    let got: Vec<(Kind, &str, &str, u32, u32, u32, &str)> = files
        .iter()
        .map(|f| {
            (
                f.kind,
                f.source.as_str(),
                f.target.as_str(),
                f.uid,
                f.gid,
                f.mode,
                text(f),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                Kind::Secret,
                "db_password",
                "/run/secrets/db",
                1000,
                0,
                0o400,
                "hunter2"
            ),
            (
                Kind::Secret,
                "tls_key",
                "/etc/ssl/key.pem",
                0,
                0,
                0o444,
                "KEY"
            ),
            (
                Kind::Config,
                "app_conf",
                "/app.conf",
                0,
                0,
                0o444,
                "port=80\n"
            ),
        ]
    );
}

#[test]
fn a_missing_secret_or_config_fails_the_task_by_name() {
    let t = task(vec![secret_ref("s-db", "db_password", "db")], vec![], &[]);
    let v = view(vec![], vec![]);
    let err = files_for(&t, &v, &crate::template::context(&t, &v)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("secret db_password (id s-db) is not on this node"),
        "{err}"
    );
    let t = task(vec![], vec![config_ref("c-1", "site", "/site.conf")], &[]);
    let err = files_for(&t, &v, &crate::template::context(&t, &v)).unwrap_err();
    assert!(err.to_string().starts_with("config site (id c-1)"), "{err}");
}

#[test]
fn owners_must_be_numbers() {
    let mut r = secret_ref("s-db", "db", "db");
    r.file.as_mut().unwrap().uid = "www-data".into();
    let t = task(vec![r], vec![], &[]);
    let v = view(vec![secret("s-db", "db", "x", None)], vec![]);
    let err = files_for(&t, &v, &crate::template::context(&t, &v)).unwrap_err();
    assert!(
        err.to_string().contains("uid \"www-data\" is not a number"),
        "{err}"
    );
}

#[test]
fn templated_files_render_with_the_task_context_and_payload_functions() {
    let t = task(
        vec![
            secret_ref("s-pw", "pw", "pw"),
            secret_ref("s-dsn", "dsn", "dsn"),
        ],
        vec![
            config_ref("c-base", "base", "/etc/base.conf"),
            config_ref("c-app", "app", "/etc/app.conf"),
        ],
        &["GREETING=hello", "EMPTY="],
    );
    let v = view(
        vec![
            secret("s-pw", "pw", "s3cret", None),
            secret(
                "s-dsn",
                "dsn",
                "postgres://app:{{secret \"pw\"}}@db/{{.Service.Name}}",
                golang(),
            ),
        ],
        vec![
            config("c-base", "base", "{{.Task.Slot}} stays raw", None),
            config(
                "c-app",
                "app",
                "{{env \"GREETING\"}} from {{.Task.Name}} [{{env \"UNSET\"}}] {{config \"/etc/base.conf\"}}",
                golang(),
            ),
        ],
    );
    let files = files_for(&t, &v, &crate::template::context(&t, &v)).unwrap();
    assert_eq!(text(&files[0]), "s3cret");
    assert_eq!(text(&files[1]), "postgres://app:s3cret@db/web");
    assert_eq!(text(&files[2]), "{{.Task.Slot}} stays raw", "not templated");
    assert_eq!(
        text(&files[3]),
        "hello from web.2.t1 [] {{.Task.Slot}} stays raw",
        "config gives the raw data, as swarmkit's does"
    );
}

#[test]
fn a_bad_template_or_an_unknown_target_names_the_file() {
    let t = task(vec![], vec![config_ref("c-app", "app", "/app.conf")], &[]);
    for (data, want) in [
        ("{{secret \"nope\"}}", "secret target nope not found"),
        ("{{.Task.Nope}}", "no field or label"),
        ("{{printf \"%999999999d\" 1}}", "not allowed"),
        ("{{", "malformed"),
    ] {
        let v = view(vec![], vec![config("c-app", "app", data, golang())]);
        let err = files_for(&t, &v, &crate::template::context(&t, &v)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config app: template"), "{msg}");
        assert!(msg.contains(want), "{data}: {msg}");
    }
}

#[test]
fn a_secrets_failing_template_is_not_quoted_in_the_task_error() {
    let t = task(vec![secret_ref("s-db", "db", "db")], vec![], &[]);
    for data in [
        "hunter2 {{.Task.Nope}}",
        "hunter2 {{secret \"nope\"}}",
        "hunter2 {{",
    ] {
        let v = view(vec![secret("s-db", "db", data, golang())], vec![]);
        let msg = files_for(&t, &v, &crate::template::context(&t, &v))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("secret db:"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[test]
fn a_default_store_per_state_dir() {
    assert_eq!(
        store::default_dir(Path::new("/var/lib/shoal")),
        Path::new("/run/shoal/task-files")
    );
    let a = store::default_dir(Path::new("/tmp/tb/node1/state"));
    let b = store::default_dir(Path::new("/tmp/tb/node2/state"));
    assert_ne!(a, b);
    assert!(
        a.starts_with("/run/shoal") && !a.starts_with("/tmp"),
        "{a:?}"
    );
}

fn file(kind: Kind, target: &str, uid: u32, gid: u32, mode: u32, data: &str) -> TaskFile {
    TaskFile {
        kind,
        source: "src".into(),
        target: target.into(),
        uid,
        gid,
        mode,
        data: SensitiveBytes::new(data.as_bytes().to_vec()),
    }
}

#[test]
fn a_disabled_store_refuses_files_with_its_reason() {
    let store = TaskFilesDir::disabled("no tmpfs here");
    assert!(
        store.write("t1", &[]).unwrap().is_empty(),
        "no files, no store needed"
    );
    let err = store
        .write(
            "t1",
            &[file(Kind::Secret, "/run/secrets/a", 0, 0, 0o400, "x")],
        )
        .unwrap_err();
    assert!(err.to_string().contains("no tmpfs here"), "{err}");
}

/// The store on a directory of /dev/shm (in memory on every Linux host): as root it is
/// mounted, otherwise used as it is.
#[test]
fn the_store_writes_owner_mode_and_content_and_removes_them() {
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipping: no /dev/shm");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("shoal-taskfiles-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let root = dir.path().join("store");
    let store = TaskFilesDir::open(&root);
    let me = nix::unistd::geteuid().as_raw();
    let my_gid = nix::unistd::getegid().as_raw();
    let placed = store
        .write(
            "t1",
            &[
                file(Kind::Secret, "/run/secrets/a", me, my_gid, 0o400, "hunter2"),
                file(Kind::Config, "/app.conf", me, my_gid, 0o644, "port=80"),
            ],
        )
        .unwrap();
    assert_eq!(placed.root, std::path::absolute(&root).unwrap());
    assert_eq!(placed.files.len(), 2);
    let meta = std::fs::metadata(&placed.files[0].host).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (me, my_gid, 0o400)
    );
    assert_eq!(std::fs::read(&placed.files[0].host).unwrap(), b"hunter2");
    assert_eq!(placed.files[1].target, "/app.conf");
    assert_eq!(
        std::fs::metadata(&placed.files[1].host).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        std::fs::metadata(&root).unwrap().mode() & 0o777,
        0o700,
        "the store is root's alone"
    );
    // Written again (a retried start): replaced, not doubled.
    store
        .write(
            "t1",
            &[file(
                Kind::Secret,
                "/run/secrets/a",
                me,
                my_gid,
                0o400,
                "new",
            )],
        )
        .unwrap();
    assert_eq!(std::fs::read_dir(root.join("t1")).unwrap().count(), 1);
    store
        .write(
            "t2",
            &[file(Kind::Secret, "/run/secrets/a", me, my_gid, 0o400, "x")],
        )
        .unwrap();
    assert_eq!(store.discard_except(&["t2".to_string()]), 1);
    assert!(!root.join("t1").exists() && root.join("t2").exists());
    store.remove("t2");
    assert!(!root.join("t2").exists());
    if nix::unistd::geteuid().is_root() {
        assert_eq!(store::mounted_fs(&root), None, "unmounted once empty");
    }
    assert!(
        store
            .write("../x", &[file(Kind::Secret, "/a", me, my_gid, 0o400, "x")])
            .is_err()
    );
    if nix::unistd::geteuid().is_root() {
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
    }
}
